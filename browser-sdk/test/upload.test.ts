import { describe, expect, it } from "vitest";
import { attest, attestForm, mediaForm, refusal, submitMedia, type Capture } from "../src/upload.js";

const capture = (): Capture => ({
  frames: [
    { timing: { at_ms: 0, step: 0 }, image: new Blob(["a"], { type: "image/jpeg" }) },
    { timing: { at_ms: 70, step: 0 }, image: new Blob(["b"], { type: "image/jpeg" }) },
  ],
  document: new Blob(["d"], { type: "image/png" }),
  signals: { camera_label: "Cam", virtual_camera: false },
});

const problem = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/problem+json", ...headers } });

const context = (answers: Array<Response | Error>, seen: Request[] = []) => ({
  fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
    seen.push(new Request(input, init));
    const answer = answers.shift();
    if (answer === undefined) throw new Error("no more answers");
    if (answer instanceof Error) throw answer;
    return answer;
  }) as typeof fetch,
  retry: { attempts: 3, baseMs: 1, maxMs: 5 },
  sleep: async () => undefined,
});

describe("upload forms", () => {
  it("send the frames in order with their timeline, signals and document", () => {
    const form = attestForm(capture());
    expect(form.getAll("selfie")).toHaveLength(2);
    expect(JSON.parse(form.get("timeline") as string)).toEqual([
      { at_ms: 0, step: 0 },
      { at_ms: 70, step: 0 },
    ]);
    expect(JSON.parse(form.get("signals") as string)).toEqual({ camera_label: "Cam", virtual_camera: false });
    expect((form.get("document") as File).name).toBe("document.png");
    const media = mediaForm(capture(), "jwt");
    expect(media.get("attestation")).toBe("jwt");
    expect(media.getAll("selfie")).toHaveLength(2);
    expect(media.get("timeline")).toBeNull();
  });
});

describe("attest", () => {
  it("sends the client token and returns the attestation", async () => {
    const seen: Request[] = [];
    const result = await attest(
      context([new Response(JSON.stringify({ attestation: "a.b.c", checks: { ok: 1 } }))], seen),
      "https://edge.example.com/",
      "tok",
      capture(),
    );
    expect(result).toEqual({ attestation: "a.b.c", checks: { ok: 1 } });
    expect(seen[0].url).toBe("https://edge.example.com/v1/attest");
    expect(seen[0].headers.get("authorization")).toBe("Bearer tok");
  });

  it("retries an overloaded edge and a dropped connection", async () => {
    const seen: Request[] = [];
    const result = await attest(
      context(
        [
          problem(503, { code: "overloaded" }, { "retry-after": "0" }),
          new TypeError("Failed to fetch"),
          new Response(JSON.stringify({ attestation: "x", checks: null })),
        ],
        seen,
      ),
      "https://edge",
      "tok",
      capture(),
    );
    expect(result.attestation).toBe("x");
    expect(seen).toHaveLength(3);
  });

  it("tells a failed challenge from a bad photo", async () => {
    const rejected = (code: string, field: string) =>
      problem(422, { code: "capture_rejected", errors: [{ field, code, message: "m" }], request_id: "req_1" });
    await expect(attest(context([rejected("spoof_suspected", "liveness")]), "https://e", "t", capture())).rejects.toMatchObject({
      code: "challenge_failed",
      requestId: "req_1",
    });
    await expect(attest(context([rejected("too_dark", "selfie")]), "https://e", "t", capture())).rejects.toMatchObject({
      code: "capture_rejected",
      problems: [{ field: "selfie", code: "too_dark", message: "m" }],
    });
  });

  it("does not wait out a lockout", async () => {
    const seen: Request[] = [];
    await expect(
      attest(context([problem(429, { code: "too_many_failures" }, { "retry-after": "180" })], seen), "https://e", "t", capture()),
    ).rejects.toMatchObject({ code: "too_many_attempts" });
    expect(seen).toHaveLength(1);
  });

  it("reports a network failure after the last attempt", async () => {
    const failure = new TypeError("offline");
    await expect(attest(context([failure, failure, failure]), "https://e", "t", capture())).rejects.toMatchObject({
      code: "network_error",
    });
  });
});

describe("submitMedia", () => {
  it("posts to the session's media with the attestation", async () => {
    const seen: Request[] = [];
    await submitMedia(context([new Response("{}")], seen), "https://api/", "tok", "ses_1", capture(), "att");
    expect(seen[0].url).toBe("https://api/v1/sessions/ses_1/media");
  });

  it("takes a replay refusal after a lost answer as the success it was", async () => {
    await submitMedia(
      context([new TypeError("connection reset"), problem(409, { code: "attestation_replayed" })]),
      "https://a",
      "t",
      "ses_1",
      capture(),
      "att",
    );
  });

  it("refuses a replay on the first attempt, and an expired session", async () => {
    await expect(
      submitMedia(context([problem(409, { code: "attestation_replayed" })]), "https://a", "t", "ses_1", capture(), "att"),
    ).rejects.toMatchObject({ code: "upload_refused" });
    await expect(
      submitMedia(context([problem(401, { code: "client_token_expired" })]), "https://a", "t", "ses_1", capture(), "att"),
    ).rejects.toMatchObject({ code: "session_expired" });
  });

  it("maps answers without a problem body", async () => {
    const error = await refusal(new Response("<html>", { status: 502, headers: { "x-request-id": "r" } }));
    expect(error.code).toBe("network_error");
    expect(error.requestId).toBe("r");
  });
});
