/**
 * Guidance from a quality report: which problem to tell the person about first. Framing comes
 * before light, light before sharpness: moving closer changes everything else.
 */
import { isMessageKey } from "./locales.js";
import type { ChallengeStep, Messages, QualityCode } from "./types.js";

const ORDER: QualityCode[] = [
  "no_face",
  "multiple_faces",
  "face_too_small",
  "face_too_large",
  "not_centred",
  "pose",
  "too_dark",
  "too_bright",
  "low_contrast",
  "blurry",
];

/** The failures in the order to show them; unknown codes (a newer edge) go last. */
export function guidanceOrder(failures: readonly string[]): QualityCode[] {
  const rank = (code: string) => {
    const index = ORDER.indexOf(code as QualityCode);
    return index < 0 ? ORDER.length : index;
  };
  return [...new Set(failures)].sort((a, b) => rank(a) - rank(b)) as QualityCode[];
}

/** The sentence for the most useful guidance, or `looks_good`. */
export function guidanceMessage(failures: readonly string[], messages: Messages): string {
  const first = guidanceOrder(failures)[0];
  if (first === undefined) return messages.looks_good;
  return isMessageKey(first) ? messages[first] : messages.not_centred;
}

/** The instruction for a challenge step. */
export function stepMessage(step: ChallengeStep | null, messages: Messages): string {
  if (step === null) return messages.challenge_done;
  if (step.kind === "neutral") return messages.step_neutral;
  if (step.kind === "flash") return messages.step_flash;
  return step.direction === "left" ? messages.step_turn_left : messages.step_turn_right;
}

/** The screen colour of a step (`null` for turns: the screen stays as it was). */
export function stepColour(step: ChallengeStep | null): string | null {
  if (step === null || step.kind === "turn") return null;
  const [r, g, b] = step.colour;
  return `rgb(${r}, ${g}, ${b})`;
}

/** Guidance is announced at most this often, so a screen reader is not flooded frame by frame. */
export const ANNOUNCE_EVERY_MS = 1500;

/**
 * When guidance reaches the screen readers' live region: a changed text, at most every
 * `ANNOUNCE_EVERY_MS` unless urgent. The first text is due at once, however soon after the page
 * loaded (`performance.now()` starts near zero).
 */
export class Announcements {
  private text = "";
  private at = Number.NEGATIVE_INFINITY;

  due(text: string, now: number, urgent = false): boolean {
    if (text === this.text || (!urgent && now - this.at < ANNOUNCE_EVERY_MS)) return false;
    this.text = text;
    this.at = now;
    return true;
  }
}
