import { describe, expect, it } from "vitest";
import { ANNOUNCE_EVERY_MS, Announcements, guidanceMessage, guidanceOrder, stepColour, stepMessage } from "../src/guidance.js";
import { locales, messagesFor } from "../src/locales.js";

const { messages } = messagesFor("en");

describe("guidance", () => {
  it("puts framing before light and light before sharpness", () => {
    expect(guidanceOrder(["blurry", "too_dark", "face_too_small"])).toEqual(["face_too_small", "too_dark", "blurry"]);
    expect(guidanceMessage(["blurry", "too_dark"], messages)).toBe("More light, please.");
    expect(guidanceMessage(["face_too_small"], messages)).toBe("Move closer.");
    expect(guidanceMessage(["blurry"], messages)).toBe("Hold still.");
    expect(guidanceMessage([], messages)).toBe(messages.looks_good);
  });

  it("keeps codes of a newer edge, last", () => {
    expect(guidanceOrder(["glare", "no_face"])).toEqual(["no_face", "glare"]);
    expect(guidanceMessage(["glare"], messages)).toBe(messages.not_centred);
  });

  it("describes each challenge step and its screen colour", () => {
    expect(stepMessage({ kind: "turn", direction: "left", max_ms: 4000 }, messages)).toMatch(/left/);
    expect(stepMessage({ kind: "turn", direction: "right", max_ms: 4000 }, messages)).toMatch(/right/);
    expect(stepMessage(null, messages)).toBe(messages.challenge_done);
    expect(stepColour({ kind: "flash", colour: [255, 0, 255], ms: 400 })).toBe("rgb(255, 0, 255)");
    expect(stepColour({ kind: "turn", direction: "left", max_ms: 4000 })).toBeNull();
  });
});

describe("locales", () => {
  it("falls back to the language, then to English, and takes overrides", () => {
    expect(locales()).toContain("en");
    expect(messagesFor("en-GB").locale).toBe("en");
    expect(messagesFor("xx").locale).toBe("en");
    expect(messagesFor("en", { start: "Go" }).messages.start).toBe("Go");
  });

  it("has a text for every code the flow can report", () => {
    for (const text of Object.values(messages)) expect(text.length).toBeGreaterThan(0);
  });
});

describe("announcements", () => {
  it("announces the first guidance at once, even right after the page loaded", () => {
    expect(new Announcements().due("Move closer.", 12)).toBe(true);
  });

  it("announces a change at most every interval unless urgent, and never a repeat", () => {
    const announcements = new Announcements();
    expect(announcements.due("Move closer.", 100)).toBe(true);
    expect(announcements.due("Move closer.", 100 + 10 * ANNOUNCE_EVERY_MS)).toBe(false);
    expect(announcements.due("Hold still.", 100 + ANNOUNCE_EVERY_MS / 2)).toBe(false);
    expect(announcements.due("Turn left.", 100 + ANNOUNCE_EVERY_MS / 2, true)).toBe(true);
    expect(announcements.due("Hold still.", 100 + ANNOUNCE_EVERY_MS)).toBe(false);
    expect(announcements.due("Hold still.", 100 + ANNOUNCE_EVERY_MS * 1.5)).toBe(true);
  });
});
