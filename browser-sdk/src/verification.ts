/**
 * One verification: the capture flow from the first button to the backend's acceptance.
 *
 * intro → camera → live quality (selfie) → liveness challenge → document → submit → upload.
 * Nothing leaves the browser before the person presses Submit, and nothing is kept in it after.
 */
import { CameraError, countCameras, openCamera, stopStream } from "./camera.js";
import { Emitter } from "./emitter.js";
import { type ChallengeRun, type FrameEngine, loadEngine } from "./engine.js";
import { type CapturedFrame, thinFrames } from "./frames.js";
import { guidanceMessage, guidanceOrder, stepColour, stepMessage } from "./guidance.js";
import { messagesFor } from "./locales.js";
import { DEFAULT_RETRY, type RetryPolicy } from "./retry.js";
import { FrameClock, cameraSignals } from "./signals.js";
import { type ClientTokenClaims, readClientToken } from "./token.js";
import type {
  CreateOptions,
  ErrorCode,
  EventName,
  Events,
  FieldProblem,
  InjectionSignals,
  Messages,
  QualityReport,
  Submission,
} from "./types.js";
import { type Capture, UploadError, attest, submitMedia } from "./upload.js";
import { type Choice, View } from "./view.js";

/** Frames analysed for live feedback are at most this wide (the edge's judgement is on these). */
const ANALYSIS_WIDTH = 640;
/**
 * The challenge tracker's copy of each frame, which is also what is sent of every challenge frame
 * after the selfie: the checks read only the face's colour and landmarks on them (BlazeFace looks
 * at 128×128 anyway), and a quarter of the pixels is a quarter of the decoding and the upload.
 */
const TRACK_WIDTH = 320;
/** Consecutive good frames before the check can begin. */
const GOOD_FRAMES = 3;
/** The challenge gives up after this long (the edge allows 30 s). */
const CHALLENGE_LIMIT_MS = 28_000;
/** Documents larger than this (or in a format the edge does not read) are re-encoded. */
const DOCUMENT_MAX_BYTES = 8 * 1024 * 1024;
const DOCUMENT_MAX_SIDE = 2400;

/** An error of the flow, with its stable code. */
export class VerificationError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly problems: FieldProblem[] = [],
    readonly requestId?: string,
  ) {
    super(message);
  }
}

class Canceled extends Error {}

/** Codes after which the same session cannot go on: `start()` fails with them. */
const FINAL: ReadonlySet<ErrorCode> = new Set(["session_expired", "too_many_attempts", "upload_refused", "engine_failed"]);

export class Verification {
  private readonly emitter = new Emitter<Events>();
  private readonly claims: ClientTokenClaims;
  private readonly messages: Messages;
  private readonly locale: string;
  private readonly retry: RetryPolicy;
  private readonly abort = new AbortController();
  private view: View | null = null;
  private engine: Promise<FrameEngine>;
  private stream: MediaStream | null = null;
  private running: Promise<Submission> | null = null;
  private readonly clock = new FrameClock();
  private readonly canvas: HTMLCanvasElement;
  private readonly small: HTMLCanvasElement;
  /** The camera's injection signals, taken when the check begins. */
  private signals: InjectionSignals = {};

  private constructor(private readonly options: CreateOptions) {
    this.claims = readClientToken(options.clientToken);
    ({ locale: this.locale, messages: this.messages } = messagesFor(options.locale, options.messages));
    this.retry = { ...DEFAULT_RETRY, attempts: Math.max(1, options.attempts ?? DEFAULT_RETRY.attempts) };
    this.engine = loadEngine(options.wasmUrl);
    this.canvas = document.createElement("canvas");
    this.small = document.createElement("canvas");
  }

  /** Checks the options and starts loading the analysis engine. */
  static async create(options: CreateOptions): Promise<Verification> {
    for (const name of ["clientToken", "edgeUrl", "apiUrl"] as const) {
      if (typeof options[name] !== "string" || options[name] === "") {
        throw new TypeError(`Idyntra.create: \`${name}\` is required`);
      }
    }
    return new Verification(options);
  }

  /** The session this capture is for. */
  get sessionId(): string {
    return this.claims.sid;
  }

  on<K extends EventName>(event: K, handler: (payload: Events[K]) => void): () => void {
    return this.emitter.on(event, handler);
  }

  /** Shows the capture screen inside `element` (in its shadow root). */
  mount(element: HTMLElement): void {
    this.view?.destroy();
    this.view = new View(element, this.messages.intro_title);
    this.view.setState("intro");
    this.view.setText(this.messages.intro_title, this.messages.intro_body);
    this.engine.then(
      () => this.emitter.emit("ready", { locale: this.locale }),
      () => undefined,
    );
  }

  /**
   * Runs the capture: resolves once the backend holds the attested capture, or rejects with a
   * {@link VerificationError} whose `code` says why the session cannot go on.
   */
  start(): Promise<Submission> {
    if (this.view === null) return Promise.reject(new Error("Idyntra: mount() the verification before start()"));
    this.running ??= this.run(this.view).finally(() => this.cleanUp());
    return this.running;
  }

  /** Stops the camera and removes the screen; a running `start()` rejects with `canceled`. */
  destroy(): void {
    this.abort.abort();
    this.cleanUp();
    this.view?.destroy();
    this.view = null;
    this.emitter.clear();
  }

  private async run(view: View): Promise<Submission> {
    try {
      const note = this.claims.liveness === "active" ? this.messages.flash_warning : "";
      view.guide(note);
      await this.choose(view, [{ key: "start", label: this.messages.start }]);
      let engine: FrameEngine;
      try {
        engine = await this.engine;
      } catch (error) {
        throw new VerificationError("engine_failed", String(error));
      }
      for (;;) {
        const capture = await this.capture(view, engine);
        const submission = await this.upload(view, capture);
        if (submission) return submission;
      }
    } catch (error) {
      if (error instanceof Canceled || this.abort.signal.aborted) {
        throw new VerificationError("canceled", "the verification was closed");
      }
      // Anything else is the engine or the browser failing under the flow.
      const failure =
        error instanceof VerificationError ? error : new VerificationError("engine_failed", String(error));
      this.report(failure);
      view.setState("failed");
      view.clearActions();
      throw failure;
    }
  }

  /** Camera, selfie, challenge and document: everything before the person presses Submit. */
  private async capture(view: View, engine: FrameEngine): Promise<Capture> {
    await this.openCamera(view, "user");
    const frames = await this.selfieAndChallenge(view, engine);
    stopStream(this.stream);
    const signals = { ...this.signals };
    this.emitter.emit("captured", { frames: frames.length, document: false });
    const document = this.claims.requireDocument ? await this.document(view) : null;
    if (document) this.emitter.emit("captured", { frames: frames.length, document: true });
    view.setState("review");
    view.setText(this.messages.intro_title);
    view.guide("");
    await this.choose(view, [{ key: "submit", label: this.messages.submit }]);
    return { frames: thinFrames(frames, this.options.maxFrames ?? 40), document, signals };
  }

  /** Opens the camera, asking again after a failure the person can fix. */
  private async openCamera(view: View, facing: "user" | "environment"): Promise<void> {
    view.setState("camera");
    view.guide(this.messages.camera_starting);
    for (;;) {
      try {
        stopStream(this.stream);
        this.stream = await openCamera(facing);
        this.checkAborted();
        view.video.srcObject = this.stream;
        await view.video.play().catch(() => undefined);
        view.showError(null);
        view.showStage(true);
        return;
      } catch (error) {
        this.checkAborted();
        if (!(error instanceof CameraError)) throw error;
        const failure = new VerificationError(error.code, this.messages[error.code]);
        this.report(failure);
        view.setState("camera-error");
        view.guide("");
        await this.choose(view, [{ key: "retry", label: this.messages.try_again }]);
      }
    }
  }

  /** Live quality until the person begins, then the challenge; the selfie is the first frame. */
  private async selfieAndChallenge(view: View, engine: FrameEngine): Promise<CapturedFrame[]> {
    view.setState("selfie");
    view.setText(this.messages.intro_title, this.claims.liveness === "active" ? this.messages.flash_warning : "");
    let good = 0;
    let begun = false;
    const begin = this.choose(view, [{ key: "begin", label: this.messages.begin_check, disabled: true }]).then(() => {
      begun = true;
    });
    await this.eachFrame(view, () => {
      if (begun) return true;
      const frame = this.grab(view.video, ANALYSIS_WIDTH, this.canvas);
      if (frame === null) return false;
      const started = performance.now();
      const report: QualityReport = engine.analyze(frame);
      const analysisMs = performance.now() - started;
      good = report.failures.length === 0 ? good + 1 : 0;
      const message = guidanceMessage(report.failures, this.messages);
      view.guide(message);
      view.setOvalGood(good > 0);
      view.enable("begin", good >= GOOD_FRAMES);
      this.emitter.emit("quality", {
        score: report.score,
        components: report.components,
        failures: report.failures,
        guidance: guidanceOrder(report.failures),
        message,
        analysisMs,
      });
      return false;
    });
    await begin;
    this.signals = cameraSignals(this.stream?.getVideoTracks()[0] ?? null, this.clock, await countCameras());
    if (this.claims.liveness === "passive") {
      const frame = this.grab(view.video, ANALYSIS_WIDTH, this.canvas);
      if (frame === null) throw new VerificationError("camera_busy", this.messages.camera_busy);
      return [{ timing: { at_ms: 0, step: 0 }, image: await this.encode(this.canvas) }];
    }
    return this.challenge(view, engine.challenge(this.claims.nonce));
  }

  private async challenge(view: View, run: ChallengeRun): Promise<CapturedFrame[]> {
    view.setState("challenge");
    view.clearActions();
    view.setText("");
    const frames: Promise<CapturedFrame>[] = [];
    const started = performance.now();
    let step = run.steps[0] ?? null;
    let index = 0;
    view.setChallenge(stepColour(step), true);
    view.guide(stepMessage(step, this.messages), true);
    try {
      await this.eachFrame(view, () => {
        const full = this.grab(view.video, ANALYSIS_WIDTH, this.canvas);
        if (full === null) return false;
        const small = this.grab(this.canvas, TRACK_WIDTH, this.small);
        if (small === null) return false;
        const tracked = run.track(small, performance.now());
        // The first frame is the selfie the face match uses: it keeps the analysis size.
        const sent = frames.length === 0 ? this.canvas : this.small;
        frames.push(this.encode(sent).then((image) => ({ timing: tracked.timing, image })));
        // The wasm answers with fresh objects: compare steps by content (neighbours always differ).
        const same = JSON.stringify(tracked.next) === JSON.stringify(run.steps[tracked.timing.step]);
        index = tracked.done ? run.steps.length : tracked.timing.step + (same ? 0 : 1);
        step = run.steps[index] ?? null;
        const colour = stepColour(step);
        if (colour !== null) view.setChallenge(colour, true);
        view.setTurn(step?.kind === "turn" ? step.direction : null, tracked.turn_progress);
        view.guide(stepMessage(step, this.messages), step?.kind === "turn");
        this.emitter.emit("challenge", {
          index,
          step,
          message: stepMessage(step, this.messages),
          turnProgress: tracked.turn_progress,
        });
        if (!tracked.done && performance.now() - started > CHALLENGE_LIMIT_MS) {
          throw new VerificationError("challenge_failed", this.messages.challenge_failed);
        }
        return tracked.done;
      });
    } finally {
      run.dispose();
      view.setChallenge(null, false);
      view.setTurn(null);
    }
    return Promise.all(frames);
  }

  /** The document photo: from a file, or from the camera. */
  private async document(view: View): Promise<Blob> {
    for (;;) {
      view.setState("document");
      view.setText(this.messages.document_title, this.messages.document_body);
      view.showStage(false);
      view.guide("");
      const choice: Choice = await this.choose(view, [
        { key: "file", label: this.messages.document_file, file: true },
        { key: "camera", label: this.messages.document_camera, secondary: true },
      ]);
      try {
        const photo = choice.file ? await readDocument(choice.file) : await this.documentFromCamera(view);
        view.showError(null);
        view.showPreview(photo);
        return photo;
      } catch (error) {
        if (error instanceof Canceled) throw error;
        const failure =
          error instanceof VerificationError ? error : new VerificationError("document_unreadable", this.messages.document_unreadable);
        this.report(failure);
      }
    }
  }

  private async documentFromCamera(view: View): Promise<Blob> {
    await this.openCamera(view, "environment");
    view.setState("document-camera");
    await this.choose(view, [{ key: "take", label: this.messages.document_take }]);
    const frame = this.grab(view.video, 1920, this.canvas);
    stopStream(this.stream);
    view.showStage(false);
    if (frame === null) throw new VerificationError("camera_busy", this.messages.camera_busy);
    return this.encode(this.canvas);
  }

  /** Both uploads; `null` when the capture must be taken again. */
  private async upload(view: View, capture: Capture): Promise<Submission | null> {
    view.setState("uploading");
    view.clearActions();
    view.guide(this.messages.uploading, true);
    const context = {
      fetch: this.options.fetch ?? globalThis.fetch.bind(globalThis),
      retry: this.retry,
      onRetry: () => view.guide(this.messages.retrying, true),
    };
    for (;;) {
      try {
        const attested = await attest(context, this.options.edgeUrl, this.options.clientToken, capture);
        this.checkAborted();
        await submitMedia(context, this.options.apiUrl, this.options.clientToken, this.claims.sid, capture, attested.attestation);
        const submission: Submission = { sessionId: this.claims.sid, status: "submitted", checks: attested.checks };
        // Nothing of the capture stays in the page.
        capture.frames.length = 0;
        capture.document = null;
        view.showPreview(null);
        view.showStage(false);
        view.setState("submitted");
        view.setText(this.messages.submitted);
        view.guide(this.messages.submitted, true);
        this.emitter.emit("submitted", submission);
        return submission;
      } catch (error) {
        this.checkAborted();
        if (!(error instanceof UploadError)) throw error;
        const failure = new VerificationError(error.code, this.describe(error), error.problems, error.requestId);
        if (FINAL.has(failure.code)) throw failure;
        this.report(failure);
        view.setState(failure.code === "network_error" ? "network-error" : "rejected");
        view.guide("");
        await this.choose(view, [{ key: "retry", label: this.messages.try_again }]);
        view.showError(null);
        // A network failure sends the same capture again; a refusal needs a new one.
        if (failure.code !== "network_error") {
          view.showPreview(null);
          return null;
        }
        view.setState("uploading");
        view.guide(this.messages.uploading, true);
      }
    }
  }

  private describe(error: UploadError): string {
    if (error.code === "upload_refused") return `${this.messages.upload_refused} (${error.problemCode ?? error.status})`;
    return this.messages[error.code as keyof Messages] ?? error.message;
  }

  private report(error: VerificationError): void {
    const problems = error.problems.map((p) => p.message ?? p.code ?? "").filter((text) => text !== "");
    this.view?.showError(error.message, problems);
    this.emitter.emit("error", {
      code: error.code,
      message: error.message,
      problems: error.problems.length ? error.problems : undefined,
      requestId: error.requestId,
    });
  }

  /** Waits for one of `actions`, or for `destroy()`. */
  private choose(view: View, actions: Parameters<View["choose"]>[0]): Promise<Choice> {
    this.checkAborted();
    return new Promise<Choice>((resolve, reject) => {
      const onAbort = () => reject(new Canceled());
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
      view.choose(actions).then((choice) => {
        this.abort.signal.removeEventListener("abort", onAbort);
        resolve(choice);
      });
    });
  }

  /** Calls `onFrame` for each new video frame until it returns `true` (or throws). */
  private eachFrame(view: View, onFrame: () => boolean): Promise<void> {
    const video = view.video;
    return new Promise<void>((resolve, reject) => {
      const next = () => {
        if (this.abort.signal.aborted) return reject(new Canceled());
        if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(step);
        else requestAnimationFrame(() => step(performance.now()));
      };
      const step = (now: number) => {
        this.clock.tick(now);
        try {
          if (onFrame()) resolve();
          else next();
        } catch (error) {
          reject(error);
        }
      };
      next();
    });
  }

  /** The current picture of `source`, at most `maxWidth` wide, drawn into `canvas`. */
  private grab(source: HTMLVideoElement | HTMLCanvasElement, maxWidth: number, canvas: HTMLCanvasElement): ImageData | null {
    const width = source instanceof HTMLVideoElement ? source.videoWidth : source.width;
    const height = source instanceof HTMLVideoElement ? source.videoHeight : source.height;
    if (width === 0 || height === 0) return null;
    const scale = Math.min(1, maxWidth / width);
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    if (context === null) return null;
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    return context.getImageData(0, 0, canvas.width, canvas.height);
  }

  private encode(canvas: HTMLCanvasElement): Promise<Blob> {
    return new Promise((resolve, reject) =>
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the frame could not be encoded"))), "image/jpeg", 0.92),
    );
  }

  private checkAborted(): void {
    if (this.abort.signal.aborted) throw new Canceled();
  }

  private cleanUp(): void {
    stopStream(this.stream);
    this.stream = null;
    if (this.view) this.view.video.srcObject = null;
    for (const canvas of [this.canvas, this.small]) {
      canvas.width = 0;
      canvas.height = 0;
    }
  }
}

/** A document photo the edge can read: JPEG, PNG or WebP up to 8 MiB, else re-encoded as JPEG. */
export async function readDocument(file: Blob): Promise<Blob> {
  const readable = ["image/jpeg", "image/png", "image/webp"].includes(file.type);
  if (readable && file.size <= DOCUMENT_MAX_BYTES && file.size > 0) return file;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new VerificationError("document_unreadable", "the file is not an image this browser can read");
  }
  const scale = Math.min(1, DOCUMENT_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d")?.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return new Promise((resolve, reject) =>
    canvas.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new VerificationError("document_unreadable", "the photo could not be re-encoded"))),
      "image/jpeg",
      0.9,
    ),
  );
}
