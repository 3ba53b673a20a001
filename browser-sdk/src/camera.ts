/** Opening the camera, with the failures a person can act on told apart. */
import type { ErrorCode } from "./types.js";

export class CameraError extends Error {
  constructor(
    readonly code: Extract<ErrorCode, "camera_denied" | "camera_missing" | "camera_busy" | "camera_unsupported">,
    message: string,
  ) {
    super(message);
  }
}

/** The SDK's code for a `getUserMedia` failure (a `DOMException` name). */
export function cameraErrorCode(name: string): CameraError["code"] {
  switch (name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return "camera_denied";
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "camera_missing";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return "camera_busy";
    default:
      return "camera_unsupported";
  }
}

/** A video stream from a camera facing `facing`, at most 1280×720 (640×480 is asked). */
export async function openCamera(facing: "user" | "environment"): Promise<MediaStream> {
  if (typeof navigator === "undefined" || !navigator.mediaDevices?.getUserMedia) {
    throw new CameraError("camera_unsupported", "navigator.mediaDevices is not available");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: {
        facingMode: facing,
        width: { ideal: 640, max: 1280 },
        height: { ideal: 480, max: 720 },
        frameRate: { ideal: 30 },
      },
    });
  } catch (error) {
    const name = error instanceof Error ? error.name : String(error);
    throw new CameraError(cameraErrorCode(name), error instanceof Error ? error.message : name);
  }
}

/** How many video inputs the page can see (labels need permission; the count does not). */
export async function countCameras(): Promise<number> {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((device) => device.kind === "videoinput").length;
  } catch {
    return 0;
  }
}

export function stopStream(stream: MediaStream | null): void {
  stream?.getTracks().forEach((track) => track.stop());
}
