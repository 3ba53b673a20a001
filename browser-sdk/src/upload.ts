/**
 * The two uploads of a capture: to the edge, which checks it and signs an attestation, then to
 * the backend with that attestation. Both send the same images in the same order, so the backend
 * finds every hash the attestation names.
 */
import type { CapturedFrame } from "./frames.js";
import { type RetryPolicy, isRetryable, withRetry } from "./retry.js";
import type { ErrorCode, FieldProblem, InjectionSignals } from "./types.js";

export interface Capture {
  /** The selfie first, then the challenge frames. */
  frames: CapturedFrame[];
  document: Blob | null;
  signals: InjectionSignals;
}

export interface Attested {
  attestation: string;
  checks: unknown;
}

export interface UploadContext {
  fetch: typeof fetch;
  retry: RetryPolicy;
  onRetry?: (attempt: number, waitMs: number) => void;
  sleep?: (ms: number) => Promise<void>;
}

/** A refusal or failure, with the stable code the SDK reports. */
export class UploadError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status: number | null,
    readonly problems: FieldProblem[] = [],
    readonly requestId?: string,
    readonly problemCode?: string,
  ) {
    super(message);
  }
}

/** Liveness verdicts of the edge that mean "follow the challenge again", not "fix the photo". */
const CHALLENGE_CODES = new Set(["spoof_suspected", "challenge_incomplete", "face_not_seen", "face_changed"]);
/** `429`s that waiting a few seconds does not cure. */
const FINAL_429 = new Set(["too_many_failures", "session_attempts_exhausted"]);

function url(base: string, path: string): string {
  return base.replace(/\/+$/, "") + path;
}

function extension(type: string): string {
  return type === "image/png" ? "png" : type === "image/webp" ? "webp" : "jpg";
}

function appendImages(form: FormData, capture: Capture): void {
  capture.frames.forEach((frame, i) =>
    form.append("selfie", frame.image, `frame-${i}.${extension(frame.image.type)}`),
  );
  if (capture.document) {
    form.append("document", capture.document, `document.${extension(capture.document.type)}`);
  }
}

/** The `multipart/form-data` body for the edge's `POST /v1/attest`. */
export function attestForm(capture: Capture): FormData {
  const form = new FormData();
  appendImages(form, capture);
  form.append("timeline", JSON.stringify(capture.frames.map((frame) => frame.timing)));
  form.append("signals", JSON.stringify(capture.signals));
  return form;
}

/** The body for the backend's `POST /v1/sessions/{id}/media`. */
export function mediaForm(capture: Capture, attestation: string): FormData {
  const form = new FormData();
  form.append("attestation", attestation);
  appendImages(form, capture);
  return form;
}

interface ProblemBody {
  code?: string;
  detail?: string;
  title?: string;
  request_id?: string;
  errors?: FieldProblem[];
}

async function problemOf(response: Response): Promise<ProblemBody> {
  try {
    const body = await response.clone().json();
    return typeof body === "object" && body !== null ? (body as ProblemBody) : {};
  } catch {
    return {};
  }
}

/** The SDK's error for a final non-2xx answer. */
export async function refusal(response: Response): Promise<UploadError> {
  const problem = await problemOf(response);
  const problems = Array.isArray(problem.errors) ? problem.errors : [];
  const requestId = problem.request_id ?? response.headers.get("x-request-id") ?? undefined;
  const code = problem.code ?? "";
  let sdkCode: ErrorCode;
  if (code === "capture_rejected") {
    sdkCode = problems.some((p) => CHALLENGE_CODES.has(p.code ?? "")) ? "challenge_failed" : "capture_rejected";
  } else if (code === "client_token_expired" || code === "session_not_awaiting_media") {
    sdkCode = "session_expired";
  } else if (response.status === 429) {
    sdkCode = "too_many_attempts";
  } else if (isRetryable(response.status)) {
    sdkCode = "network_error";
  } else {
    sdkCode = "upload_refused";
  }
  const message = problem.detail ?? problem.title ?? `HTTP ${response.status}`;
  return new UploadError(sdkCode, message, response.status, problems, requestId, code || undefined);
}

async function send(
  context: UploadContext,
  request: (attempt: number) => Promise<Response>,
): Promise<{ response: Response; attempt: number }> {
  let attempt = 0;
  try {
    const response = await withRetry(
      (n) => {
        attempt = n;
        return request(n);
      },
      context.retry,
      {
        onRetry: context.onRetry,
        sleep: context.sleep,
        // A lockout answers 429 for minutes: report it at once instead of waiting it out.
        shouldRetry: async (answer) =>
          isRetryable(answer.status) &&
          !(answer.status === 429 && FINAL_429.has((await problemOf(answer)).code ?? "")),
      },
    );
    return { response, attempt };
  } catch (error) {
    throw new UploadError("network_error", String(error), null);
  }
}

/** `POST {edgeUrl}/v1/attest`: the edge's checks and its signed attestation. */
export async function attest(
  context: UploadContext,
  edgeUrl: string,
  clientToken: string,
  capture: Capture,
): Promise<Attested> {
  const { response } = await send(context, () =>
    context.fetch(url(edgeUrl, "/v1/attest"), {
      method: "POST",
      headers: { authorization: `Bearer ${clientToken}` },
      body: attestForm(capture),
    }),
  );
  if (!response.ok) throw await refusal(response);
  const body = (await response.json()) as Partial<Attested>;
  if (typeof body.attestation !== "string") {
    throw new UploadError("upload_refused", "the edge answered without an attestation", response.status);
  }
  return { attestation: body.attestation, checks: body.checks ?? null };
}

/** `POST {apiUrl}/v1/sessions/{id}/media`: the backend keeps the attested capture. */
export async function submitMedia(
  context: UploadContext,
  apiUrl: string,
  clientToken: string,
  sessionId: string,
  capture: Capture,
  attestation: string,
): Promise<void> {
  const { response, attempt } = await send(context, () =>
    context.fetch(url(apiUrl, `/v1/sessions/${encodeURIComponent(sessionId)}/media`), {
      method: "POST",
      headers: { authorization: `Bearer ${clientToken}` },
      body: mediaForm(capture, attestation),
    }),
  );
  if (response.ok) return;
  // A retry after an answer lost on the way: the backend already holds this very attestation.
  if (attempt > 0 && response.status === 409 && (await problemOf(response)).code === "attestation_replayed") {
    return;
  }
  throw await refusal(response);
}
