/**
 * The analysis engine: the edge's own checks (BlazeFace, quality, challenge tracking), compiled
 * to wasm. Loaded on first use, not with the SDK's script, and cached by the browser like any
 * other file; the model weights are inside the wasm.
 */
import type { ChallengeStep, QualityReport, TrackedFrame } from "./types.js";

interface WasmChallenge {
  steps(): ChallengeStep[];
  track(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number, nowMs: number): TrackedFrame;
  free(): void;
}

interface WasmModule {
  default: (options?: { module_or_path?: string | URL }) => Promise<unknown>;
  analyzeFrame(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number): QualityReport;
  Challenge: new (nonce: string) => WasmChallenge;
}

/** The checks a capture screen runs on its frames. */
export interface FrameEngine {
  analyze(frame: ImageData): QualityReport;
  challenge(nonce: string): ChallengeRun;
}

/** A session's challenge, followed frame by frame. */
export interface ChallengeRun {
  readonly steps: ChallengeStep[];
  track(frame: ImageData, nowMs: number): TrackedFrame;
  dispose(): void;
}

let loading: Promise<FrameEngine> | null = null;

/** The engine, loaded once per page. */
export function loadEngine(wasmUrl?: string | URL): Promise<FrameEngine> {
  loading ??= load(wasmUrl).catch((error) => {
    loading = null;
    throw error;
  });
  return loading;
}

async function load(wasmUrl?: string | URL): Promise<FrameEngine> {
  // Kept out of the bundle: the glue and its wasm sit beside the SDK's module.
  const glue = new URL("./wasm/idyntra_edge.js", import.meta.url).href;
  const wasm = (await import(/* @vite-ignore */ glue)) as WasmModule;
  await wasm.default(wasmUrl === undefined ? undefined : { module_or_path: wasmUrl });
  return {
    analyze: (frame) => wasm.analyzeFrame(frame.data, frame.width, frame.height),
    challenge: (nonce) => {
      const inner = new wasm.Challenge(nonce);
      return {
        steps: inner.steps(),
        track: (frame, nowMs) => inner.track(frame.data, frame.width, frame.height, nowMs),
        dispose: () => inner.free(),
      };
    },
  };
}
