/** Public types of the SDK. Field names follow the edge's and the backend's JSON. */

/** Options of {@link Idyntra.create}. */
export interface CreateOptions {
  /** The session's client token, from your server's `POST /v1/sessions`. */
  clientToken: string;
  /** Base URL of the edge that attests the capture (`POST {edgeUrl}/v1/attest`). */
  edgeUrl: string;
  /** Base URL of the Idyntra API (`POST {apiUrl}/v1/sessions/{id}/media`). */
  apiUrl: string;
  /** Language of the guidance: `en` (default), or any locale added with `messages`. */
  locale?: string;
  /** Replaces some texts of the locale, by key (see `locales.ts`). */
  messages?: Partial<Messages>;
  /** Where the analysis wasm lives; by default next to the SDK's module. */
  wasmUrl?: string | URL;
  /** Network attempts per upload (network errors, 429 and 5xx are retried). Default 4. */
  attempts?: number;
  /** Most `selfie` parts sent (the selfie and the challenge frames). Default 40, the edge's limit. */
  maxFrames?: number;
  /** For tests: the `fetch` to use. */
  fetch?: typeof fetch;
}

/** Texts shown and announced by the capture screen. */
export type Messages = Record<MessageKey, string>;

export type MessageKey =
  | "intro_title"
  | "intro_body"
  | "flash_warning"
  | "start"
  | "camera_starting"
  | "begin_check"
  | "looks_good"
  // Each quality code has its guidance sentence.
  | QualityCode
  | "step_neutral"
  | "step_flash"
  | "step_turn_left"
  | "step_turn_right"
  | "challenge_done"
  | "document_title"
  | "document_body"
  | "document_camera"
  | "document_file"
  | "document_take"
  | "document_retake"
  | "submit"
  | "uploading"
  | "retrying"
  | "submitted"
  | "try_again"
  // Each error code but `canceled` has its sentence.
  | Exclude<ErrorCode, "canceled">;

/** Quality codes of the edge (`idyntra-types::QualityCode`). */
export type QualityCode =
  | "no_face"
  | "multiple_faces"
  | "face_too_small"
  | "face_too_large"
  | "not_centred"
  | "pose"
  | "too_dark"
  | "too_bright"
  | "low_contrast"
  | "blurry";

/** The quality report of a frame, computed in wasm by the edge's own code. */
export interface QualityReport {
  score: number;
  components: Record<string, number>;
  measurements: Record<string, number>;
  failures: QualityCode[];
}

export type TurnDirection = "left" | "right";

/** One step of the session's liveness challenge, as the wasm describes it. */
export type ChallengeStep =
  | { kind: "neutral"; colour: [number, number, number]; ms: number }
  | { kind: "flash"; colour: [number, number, number]; ms: number }
  | { kind: "turn"; direction: TurnDirection; max_ms: number };

/** When a frame was taken in the challenge and which step was on screen. */
export interface FrameTiming {
  at_ms: number;
  step: number;
}

/** What the wasm tracker says after a challenge frame. */
export interface TrackedFrame {
  timing: FrameTiming;
  next: ChallengeStep | null;
  faces: number;
  yaw_deg: number | null;
  turn_progress: number;
  done: boolean;
}

/** Browser-side observations about the camera, sent to the edge as `signals`. Not proof. */
export type InjectionSignals = Record<string, string | number | boolean>;

/** What `start()` resolves with once the backend accepted the capture. */
export interface Submission {
  sessionId: string;
  status: "submitted";
  /** The edge's checks (quality and liveness) of the attested capture. */
  checks: unknown;
}

/** Stable error codes of the `error` event and of a rejected `start()`. */
export type ErrorCode =
  | "camera_denied"
  | "camera_missing"
  | "camera_busy"
  | "camera_unsupported"
  | "engine_failed"
  | "document_unreadable"
  | "capture_rejected"
  | "challenge_failed"
  | "network_error"
  | "session_expired"
  | "too_many_attempts"
  | "upload_refused"
  | "canceled";

/** A field problem of a problem+json answer. */
export interface FieldProblem {
  field?: string;
  code?: string;
  message?: string;
}

/** Payloads of the events. */
export interface Events {
  ready: { locale: string };
  quality: {
    score: number;
    components: Record<string, number>;
    failures: QualityCode[];
    /** The guidance codes in the order to show them, the first being the most useful. */
    guidance: QualityCode[];
    message: string;
    /** Milliseconds the wasm analysis of this frame took. */
    analysisMs: number;
  };
  challenge: { index: number; step: ChallengeStep | null; message: string; turnProgress: number };
  captured: { frames: number; document: boolean };
  submitted: Submission;
  error: { code: ErrorCode; message: string; problems?: FieldProblem[]; requestId?: string };
}

export type EventName = keyof Events;
