/**
 * Injection signals: what the browser can notice about the camera feeding the capture. They go to
 * the edge as the `signals` part and into the attestation as received. They are signals, not
 * proof: a modified browser can report anything, so the backend weighs them, never trusts them.
 */
import type { InjectionSignals } from "./types.js";

/**
 * Camera names of common virtual cameras (OBS, ManyCam, Snap Camera, DroidCam, XSplit, …), and
 * the video file Chromium's `--use-file-for-fake-video-capture` plays, which it names by path.
 */
const VIRTUAL_CAMERA =
  /virtual|obs|manycam|snap camera|droidcam|xsplit|epoccam|camo|fake|dummy|v4l2loopback|\.(y4m|mjpe?g)$/i;

/** Statistics of the intervals between video frames: real sensors jitter, rendered feeds often do not. */
export class FrameClock {
  private last: number | null = null;
  private readonly intervals: number[] = [];

  constructor(private readonly keep = 120) {}

  /** Records a frame presented at `nowMs`. */
  tick(nowMs: number): void {
    if (this.last !== null && nowMs > this.last) {
      this.intervals.push(nowMs - this.last);
      if (this.intervals.length > this.keep) this.intervals.shift();
    }
    this.last = nowMs;
  }

  stats(): { frames: number; meanMs: number; sdMs: number } {
    const n = this.intervals.length;
    if (n === 0) return { frames: 0, meanMs: 0, sdMs: 0 };
    const mean = this.intervals.reduce((a, b) => a + b, 0) / n;
    const variance = this.intervals.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
    return { frames: n, meanMs: round(mean), sdMs: round(Math.sqrt(variance)) };
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** What a video track and the page can tell about the camera. */
export function cameraSignals(track: MediaStreamTrack | null, clock: FrameClock, devices: number): InjectionSignals {
  const signals: InjectionSignals = { camera_devices: devices };
  if (track === null) return { ...signals, camera_track: false };
  const label = track.label ?? "";
  const settings = typeof track.getSettings === "function" ? track.getSettings() : {};
  // A track of a real device is a plain MediaStreamTrack; canvas and element captures are other
  // kinds of track (e.g. CanvasCaptureMediaStreamTrack).
  const kind = Object.getPrototypeOf(track)?.constructor?.name ?? "unknown";
  signals.camera_track = kind === "MediaStreamTrack" && track.kind === "video";
  signals.camera_track_kind = kind;
  signals.camera_label = label.slice(0, 120);
  signals.virtual_camera = VIRTUAL_CAMERA.test(label);
  if (typeof settings.width === "number") signals.camera_width = settings.width;
  if (typeof settings.height === "number") signals.camera_height = settings.height;
  if (typeof settings.frameRate === "number") signals.camera_frame_rate = round(settings.frameRate);
  if (typeof settings.facingMode === "string") signals.camera_facing = settings.facingMode;
  const stats = clock.stats();
  signals.frame_intervals = stats.frames;
  signals.frame_interval_mean_ms = stats.meanMs;
  signals.frame_interval_sd_ms = stats.sdMs;
  signals.track_muted = track.muted;
  return signals;
}
