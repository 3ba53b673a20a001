import { describe, expect, it } from "vitest";
import { cameraErrorCode } from "../src/camera.js";
import { FrameClock, cameraSignals } from "../src/signals.js";

describe("injection signals", () => {
  it("measures the rhythm of frames", () => {
    const clock = new FrameClock();
    [0, 33, 66, 100, 133].forEach((t) => clock.tick(t));
    const stats = clock.stats();
    expect(stats.frames).toBe(4);
    expect(stats.meanMs).toBeCloseTo(33.25, 1);
    expect(stats.sdMs).toBeLessThan(1);
  });

  it("names a virtual camera and a track that is not a device's", () => {
    class CanvasCaptureMediaStreamTrack {
      kind = "video";
      label = "OBS Virtual Camera";
      muted = false;
      getSettings() {
        return { width: 1280, height: 720, frameRate: 30 };
      }
    }
    const signals = cameraSignals(new CanvasCaptureMediaStreamTrack() as unknown as MediaStreamTrack, new FrameClock(), 2);
    expect(signals.virtual_camera).toBe(true);
    expect(signals.camera_track).toBe(false);
    expect(signals.camera_track_kind).toBe("CanvasCaptureMediaStreamTrack");
    expect(signals.camera_width).toBe(1280);
    expect(signals.camera_devices).toBe(2);
    expect(cameraSignals(null, new FrameClock(), 0).camera_track).toBe(false);
    const file = { ...new CanvasCaptureMediaStreamTrack(), label: "/tmp/face.y4m", getSettings: () => ({}) };
    expect(cameraSignals(file as unknown as MediaStreamTrack, new FrameClock(), 1).virtual_camera).toBe(true);
  });

  it("tells the camera failures a person can act on apart", () => {
    expect(cameraErrorCode("NotAllowedError")).toBe("camera_denied");
    expect(cameraErrorCode("NotFoundError")).toBe("camera_missing");
    expect(cameraErrorCode("NotReadableError")).toBe("camera_busy");
    expect(cameraErrorCode("Weird")).toBe("camera_unsupported");
  });
});
