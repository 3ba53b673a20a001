/**
 * The frames of a capture and their thinning to the edge's frame limit: the first frame is the
 * selfie and always stays; each challenge step keeps an even share of its frames, its first and
 * last among them, so every step still has the frames the verifier needs.
 */
import type { FrameTiming } from "./types.js";

export interface CapturedFrame {
  timing: FrameTiming;
  image: Blob;
}

/** At most `limit` frames of `frames` (in order), the first always kept. */
export function thinFrames<T extends { timing: FrameTiming }>(frames: readonly T[], limit: number): T[] {
  if (frames.length <= limit) return [...frames];
  if (limit < 1) return [];
  const [selfie, ...rest] = frames;
  const steps = new Map<number, T[]>();
  for (const frame of rest) {
    const list = steps.get(frame.timing.step) ?? [];
    list.push(frame);
    steps.set(frame.timing.step, list);
  }
  // Share the room left among the steps: each gets an equal part, the smallest steps give back
  // what they do not need.
  let room = limit - 1;
  const groups = [...steps.entries()].sort((a, b) => a[1].length - b[1].length);
  const kept = new Map<number, T[]>();
  groups.forEach(([step, list], i) => {
    const share = Math.floor(room / (groups.length - i));
    const chosen = evenly(list, Math.min(share, list.length));
    kept.set(step, chosen);
    room -= chosen.length;
  });
  const chosen = new Set([...kept.values()].flat());
  return [selfie, ...rest.filter((frame) => chosen.has(frame))];
}

/** `count` items of `list`, evenly spread, first and last included. */
function evenly<T>(list: readonly T[], count: number): T[] {
  if (count >= list.length) return [...list];
  if (count <= 0) return [];
  if (count === 1) return [list[0]];
  const picked: T[] = [];
  for (let i = 0; i < count; i++) picked.push(list[Math.round((i * (list.length - 1)) / (count - 1))]);
  return picked;
}
