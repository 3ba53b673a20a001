import { describe, expect, it } from "vitest";
import { backoffMs, isRetryable, retryAfterMs, withRetry } from "../src/retry.js";

const policy = { attempts: 4, baseMs: 500, maxMs: 8000 };

describe("retries", () => {
  it("retries network errors, 429 and 5xx only", () => {
    expect([408, 429, 500, 503].every(isRetryable)).toBe(true);
    expect([400, 401, 409, 413, 422].some(isRetryable)).toBe(false);
  });

  it("reads Retry-After in seconds and as a date", () => {
    expect(retryAfterMs("3")).toBe(3000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(retryAfterMs("soon")).toBeNull();
    expect(retryAfterMs(null)).toBeNull();
  });

  it("backs off exponentially with jitter, capped", () => {
    expect(backoffMs(1, policy, () => 0)).toBe(250);
    expect(backoffMs(1, policy, () => 1)).toBe(500);
    expect(backoffMs(3, policy, () => 1)).toBe(2000);
    expect(backoffMs(10, policy, () => 1)).toBe(8000);
  });

  it("gives up after the last attempt with the last answer", async () => {
    const waits: number[] = [];
    let calls = 0;
    const response = await withRetry(
      async () => {
        calls++;
        return new Response("busy", { status: 503, headers: { "retry-after": "1" } });
      },
      policy,
      { sleep: async (ms) => void waits.push(ms) },
    );
    expect(calls).toBe(4);
    expect(response.status).toBe(503);
    expect(waits).toEqual([1000, 1000, 1000]);
  });

  it("recovers from a network failure and stops at a final answer", async () => {
    let calls = 0;
    const response = await withRetry(
      async () => {
        calls++;
        if (calls === 1) throw new TypeError("Failed to fetch");
        return new Response("{}", { status: 422 });
      },
      policy,
      { sleep: async () => undefined, random: () => 0 },
    );
    expect(calls).toBe(2);
    expect(response.status).toBe(422);
  });

  it("throws the network error when every attempt failed", async () => {
    await expect(
      withRetry(async () => Promise.reject(new TypeError("offline")), { ...policy, attempts: 2 }, { sleep: async () => undefined }),
    ).rejects.toThrow("offline");
  });
});
