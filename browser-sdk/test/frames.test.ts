import { describe, expect, it } from "vitest";
import { thinFrames } from "../src/frames.js";

const frames = (perStep: number[]) => {
  const list = [{ timing: { at_ms: 0, step: 0 }, id: "selfie" }];
  let at = 1;
  perStep.forEach((count, step) => {
    for (let i = 0; i < count; i++) list.push({ timing: { at_ms: at++, step }, id: `${step}-${i}` });
  });
  return list;
};

describe("thinFrames", () => {
  it("keeps everything under the limit", () => {
    const all = frames([3, 3]);
    expect(thinFrames(all, 40)).toEqual(all);
  });

  it("keeps the selfie, the order and every step within the limit", () => {
    const all = frames([12, 7, 6, 8, 7, 20, 25]);
    const kept = thinFrames(all, 40);
    expect(kept.length).toBeLessThanOrEqual(40);
    expect(kept[0].id).toBe("selfie");
    const times = kept.map((f) => f.timing.at_ms);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    for (let step = 0; step < 7; step++) {
      const inStep = kept.filter((f) => f.id !== "selfie" && f.timing.step === step);
      expect(inStep.length).toBeGreaterThanOrEqual(5);
      // The first and last frame of each step stay.
      expect(inStep[0].id).toBe(`${step}-0`);
    }
  });

  it("gives the room short steps do not use to long ones", () => {
    const kept = thinFrames(frames([2, 2, 2, 40]), 20);
    expect(kept.length).toBe(20);
    expect(kept.filter((f) => f.timing.step === 3 && f.id !== "selfie").length).toBe(13);
  });
});
