// End-to-end: the demo page of the real `idyntra serve` (dev profile, embedded SQLite) in
// Debian's headless Chromium, whose fake camera plays a video made from real photos answering
// the session's liveness challenge (tests/src/bin/fake-camera.rs). Scenarios:
//   verified  — the person of the video shows a photo of themselves as the document;
//   rejected  — the document shows someone else;
//   still     — the camera shows a still photo: the challenge fails at the edge;
//   document-camera — the document photo taken with the camera, the first upload's connection
//               broken (the SDK sends it again): verified;
//   denied    — the camera permission is refused: the page says how to allow it;
//   element   — <idyntra-verify> on a phone-sized screen with reduced motion.
// Then it measures the live analysis in the page. Screenshots of each state go to
// $E2E_SCREENSHOTS (default e2e/screenshots). Environment: E2E_SERVER_BIN (the idyntra binary),
// E2E_FAKE_CAMERA_BIN, E2E_FIXTURES (the registry photos, models/fixtures), E2E_CHROMIUM
// (default /usr/bin/chromium), and E2E_SCENARIOS to run some only (comma-separated).
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const sdk = resolve(new URL("..", import.meta.url).pathname);
const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const SERVER_BIN = need("E2E_SERVER_BIN");
const FAKE_CAMERA_BIN = need("E2E_FAKE_CAMERA_BIN");
const FIXTURES = need("E2E_FIXTURES");
const CHROMIUM = process.env.E2E_CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = resolve(process.env.E2E_SCREENSHOTS ?? join(sdk, "e2e/screenshots"));
const wanted = (process.env.E2E_SCENARIOS ?? "verified,rejected,still,document-camera,denied,element,measure").split(",");
const work = mkdtempSync(join(tmpdir(), "idyntra-e2e-"));
mkdirSync(SCREENSHOTS, { recursive: true });

const freePort = () =>
  new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
    server.on("error", fail);
  });

async function startServer() {
  const port = await freePort();
  const log = [];
  // The server reads its configuration from IDYNTRA_* variables: only these.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IDYNTRA_")));
  const child = spawn(SERVER_BIN, ["serve"], {
    env: {
      ...inherited,
      IDYNTRA_PROFILE: "dev",
      IDYNTRA_LISTEN: `127.0.0.1:${port}`,
      IDYNTRA_DATA_DIR: join(work, "data"),
      IDYNTRA_DEMO__SDK_DIR: join(sdk, "dist"),
      IDYNTRA_HTTP__ALLOWED_HOSTS: '["127.0.0.1", "localhost"]',
      // No manipulation detector is bundled yet: by default that sends every session to review.
      IDYNTRA_DECISION__MANIPULATION_UNCHECKED: "ignore",
      IDYNTRA_LOG__LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const stream of [child.stdout, child.stderr]) stream.on("data", (chunk) => log.push(String(chunk)));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`idyntra serve exited:\n${log.join("")}`);
    try {
      if ((await fetch(`${base}/readyz`)).ok) return { child, base, log };
    } catch {}
    await new Promise((done) => setTimeout(done, 200));
  }
  child.kill();
  throw new Error(`idyntra serve did not become ready:\n${log.join("")}`);
}

function claims(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
}

async function launch(video, permissions) {
  const args = ["--use-fake-device-for-media-stream", "--no-sandbox", "--disable-gpu"];
  if (video) args.push(`--use-file-for-fake-video-capture=${video}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  const context = await browser.newContext({ permissions, viewport: { width: 800, height: 900 } });
  return { browser, page: await context.newPage() };
}

const sdkRoot = (page) => page.locator("#verify");
const state = (page) => page.evaluate(() => document.querySelector("#verify").shadowRoot?.querySelector(".idy")?.dataset.state);
async function waitForState(page, wanted, timeout = 60_000) {
  await page.waitForFunction(
    (states) => states.includes(document.querySelector("#verify").shadowRoot?.querySelector(".idy")?.dataset.state),
    wanted,
    { timeout, polling: 100 },
  );
}
async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Clicks "Begin the check" when the fake video is `lead` frames before its challenge. */
async function beginInStep(page, camera, lead = 3) {
  return page.evaluate(
    ({ start, frames, bits, block, y, lead }) =>
      new Promise((done, fail) => {
        const root = document.querySelector("#verify").shadowRoot;
        const video = root.querySelector("video");
        const button = root.querySelector('button[data-action="begin"]');
        const canvas = document.createElement("canvas");
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        const context = canvas.getContext("2d", { willReadFrequently: true });
        const target = (start - lead + frames) % frames;
        const deadline = performance.now() + 60_000;
        const read = () => {
          context.drawImage(video, 0, 0);
          const row = context.getImageData(0, y, bits * block, 1).data;
          let index = 0;
          for (let bit = 0; bit < bits; bit++) {
            if (row[(bit * block + block / 2) * 4] > 127) index |= 1 << bit;
          }
          return index;
        };
        const check = () => {
          const index = read();
          if (index === target && !button.disabled) {
            button.click();
            return done(index);
          }
          if (performance.now() > deadline) return fail(new Error(`the video never showed frame ${target}`));
          video.requestVideoFrameCallback(check);
        };
        video.requestVideoFrameCallback(check);
      }),
    { ...camera.marker, start: camera.challenge_start, frames: camera.frames, lead },
  );
}

async function demoSession(base) {
  const response = await fetch(`${base}/demo/session`, { method: "POST" });
  if (!response.ok) throw new Error(`POST /demo/session: ${response.status}`);
  return response.json();
}

/** A capture answered by the fake camera; returns the decision the page shows (or the SDK state). */
async function capture(base, { name, answer, document, keyboard = false, dropFirstUpload = false }) {
  // The session first, so the video can answer its challenge; the page is then given this session.
  const session = await demoSession(base);
  const video = join(work, `${name}.y4m`);
  const camera = JSON.parse(
    execFileSync(FAKE_CAMERA_BIN, [
      "--nonce", claims(session.client_token).nonce, "--answer", answer,
      "--frontal", join(FIXTURES, "obama.jpg"), "--turned", join(FIXTURES, "obama2.jpg"), "--out", video,
    ]).toString(),
  );
  const { browser, page } = await launch(video, ["camera"]);
  try {
    await page.route("**/demo/session", (route) =>
      route.request().method() === "POST" ? route.fulfill({ json: session }) : route.continue(),
    );
    // The attestation the edge signs records the SDK's injection signals as received.
    let signals = null;
    page.on("response", async (response) => {
      if (response.url().endsWith("/v1/attest") && response.status() === 200) {
        signals = claims((await response.json()).attestation).injection_signals;
      }
    });
    // The widths of the images the SDK sends to the edge, read in the page before they leave it.
    await page.addInitScript(() => {
      const send = window.fetch.bind(window);
      window.fetch = async (input, init) => {
        // The SDK also fetches its engine, by a URL object.
        const target = input instanceof Request ? input.url : String(input);
        if (target.endsWith("/v1/attest") && init?.body instanceof FormData) {
          const frames = init.body.getAll("selfie");
          window.attestedFrameWidths = await Promise.all(frames.map(async (frame) => (await createImageBitmap(frame)).width));
        }
        return send(input, init);
      };
    });
    let dropped = 0;
    if (dropFirstUpload) {
      // The connection breaks under the first upload to the edge: the SDK must send it again.
      await page.route("**/v1/attest", (route) => (dropped++ === 0 ? route.abort("connectionreset") : route.continue()));
    }
    await page.goto(`${base}/demo`);
    const start = sdkRoot(page).locator('button[data-action="start"]');
    if (keyboard) {
      // The first action has the focus: Enter presses it.
      await start.waitFor();
      await page.waitForFunction(() => document.querySelector("#verify").shadowRoot.activeElement?.dataset.action === "start");
      await page.keyboard.press("Enter");
    } else {
      await start.click();
    }
    await page.locator("#verify").locator('button[data-action="begin"]:not([disabled])').waitFor({ timeout: 60_000 });
    // The guidance reaches screen readers through the live region.
    const announced = await sdkRoot(page)
      .locator('[role="status"]:not(:empty)')
      .waitFor({ state: "attached", timeout: 5_000 })
      .then(() => true, () => false);
    if (!announced) throw new Error("nothing was announced in the live region");
    await shot(page, `${name}-1-live-guidance`);
    await beginInStep(page, camera);
    await waitForState(page, ["challenge"]);
    await page.waitForTimeout(1200);
    await shot(page, `${name}-2-challenge`);
    await waitForState(page, ["document"], 40_000);
    if (document === "camera") {
      await sdkRoot(page).locator('button[data-action="camera"]').click();
      await waitForState(page, ["document-camera"]);
      await sdkRoot(page).locator('button[data-action="take"]').click();
    } else {
      await sdkRoot(page).locator('input[data-action="file"]').setInputFiles(join(FIXTURES, document));
    }
    await waitForState(page, ["review"]);
    await shot(page, `${name}-3-review`);
    await sdkRoot(page).locator('button[data-action="submit"]').click();
    await waitForState(page, ["submitted", "rejected", "failed", "network-error"], 120_000);
    const after = await state(page);
    if (after === "submitted") {
      await page.locator('[data-testid="decision"]:not(:empty)').waitFor({ timeout: 120_000 });
      const decision = await page.locator('[data-testid="decision"]').textContent();
      await shot(page, `${name}-4-decision-${decision}`);
      const scores = await page.locator("#checks").innerText();
      // Nothing of the capture stays in the browser.
      const stored = await page.evaluate(async () => ({
        local: localStorage.length,
        session: sessionStorage.length,
        databases: (await indexedDB.databases()).length,
        caches: (await caches.keys()).length,
        cookies: document.cookie.length,
      }));
      if (Object.values(stored).some((n) => n !== 0)) throw new Error(`the page kept data: ${JSON.stringify(stored)}`);
      if (dropFirstUpload && dropped < 2) throw new Error("the dropped upload was not sent again");
      // The selfie keeps the analysis width (the fake camera's 640 pixels); the challenge frames
      // after it are sent at the tracker's 320.
      const widths = await page.evaluate(() => window.attestedFrameWidths);
      const challengeFramesSmall = widths?.length > 1 && widths.slice(1).every((width) => width <= 320);
      if (widths?.[0] !== 640 || (widths.length > 1 && !challengeFramesSmall)) {
        throw new Error(`the frames sent to the edge are ${JSON.stringify(widths)} pixels wide`);
      }
      // Chromium's file-fed fake camera is a device track, named by the file: flagged as virtual.
      if (signals?.camera_track !== true || signals?.virtual_camera !== true || typeof signals?.frame_interval_mean_ms !== "number") {
        throw new Error(`the attestation lacks the camera's signals: ${JSON.stringify(signals)}`);
      }
      return { outcome: decision, detail: `${scores.replace(/\s+/g, " ")}; signals ${JSON.stringify(signals)}` };
    }
    const alert = await sdkRoot(page).locator(".alert").textContent();
    const problems = await sdkRoot(page).locator(".problems").innerText().catch(() => "");
    await shot(page, `${name}-4-${after}`);
    return { outcome: after, detail: `${alert} ${problems}`.trim() };
  } finally {
    await browser.close();
  }
}

async function denied(base) {
  const { browser, page } = await launch(null, []);
  try {
    await page.goto(`${base}/demo`);
    await sdkRoot(page).locator('button[data-action="start"]').click();
    await waitForState(page, ["camera-error"], 30_000);
    const alert = await sdkRoot(page).locator(".alert").textContent();
    await shot(page, "denied-camera-error");
    return { outcome: "camera-error", detail: alert };
  } finally {
    await browser.close();
  }
}

/** `<idyntra-verify>` on a phone-sized screen with reduced motion: it mounts, and stays still. */
async function element(base) {
  const session = await demoSession(base);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  try {
    const context = await browser.newContext({ viewport: { width: 375, height: 740 }, reducedMotion: "reduce", isMobile: true });
    const page = await context.newPage();
    await page.goto(`${base}/demo`);
    const found = await page.evaluate(async (token) => {
      await import("/demo/sdk/element.js");
      const element = document.createElement("idyntra-verify");
      element.setAttribute("client-token", token);
      element.setAttribute("edge-url", location.origin);
      element.setAttribute("api-url", location.origin);
      const ready = new Promise((done) => element.addEventListener("idyntra-ready", (e) => done(e.detail)));
      document.querySelector("main").replaceChildren(element);
      const detail = await ready;
      const root = element.shadowRoot;
      const ellipse = root.querySelector(".oval ellipse");
      const start = root.querySelector('button[data-action="start"]');
      return {
        locale: detail.locale,
        start: start?.textContent,
        animation: getComputedStyle(ellipse).animationName,
        buttonWidth: start.getBoundingClientRect().width,
        width: root.querySelector(".idy").getBoundingClientRect().width,
      };
    }, session.client_token);
    await page.screenshot({ path: join(SCREENSHOTS, "element-mobile.png"), fullPage: true });
    const ok = found.start === "Start" && found.animation === "none" && found.buttonWidth > found.width * 0.8;
    return { outcome: ok ? "mounted" : "wrong", detail: JSON.stringify(found) };
  } finally {
    await browser.close();
  }
}

/** Time of the wasm analysis in the page: the SDK's own `quality` events over live frames. */
async function measure(base) {
  const session = await demoSession(base);
  const video = join(work, "measure.y4m");
  execFileSync(FAKE_CAMERA_BIN, [
    "--nonce", claims(session.client_token).nonce, "--answer", "still", "--fps", "30",
    "--frontal", join(FIXTURES, "obama.jpg"), "--turned", join(FIXTURES, "obama2.jpg"), "--out", video,
  ]);
  const { browser, page } = await launch(video, ["camera"]);
  try {
    await page.goto(`${base}/demo`);
    await page.waitForFunction(() => window.demoVerification !== undefined);
    await page.evaluate(() => {
      window.analysis = [];
      window.demoVerification.on("quality", (q) => window.analysis.push([performance.now(), q.analysisMs]));
    });
    await sdkRoot(page).locator('button[data-action="start"]').click();
    await page.waitForFunction(() => window.analysis.length >= 10, null, { timeout: 60_000 });
    await page.waitForTimeout(8000);
    const samples = await page.evaluate(() => window.analysis.slice(5));
    const times = samples.map(([, ms]) => ms).sort((a, b) => a - b);
    const pick = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    const fps = (samples.length - 1) / ((samples.at(-1)[0] - samples[0][0]) / 1000);
    const track = await page.evaluate(async () => {
      const glue = await import("/demo/sdk/wasm/idyntra_edge.js");
      await glue.default();
      const video = document.querySelector("#verify").shadowRoot.querySelector("video");
      const canvas = document.createElement("canvas");
      canvas.width = 320;
      canvas.height = 240;
      const context = canvas.getContext("2d", { willReadFrequently: true });
      const challenge = new glue.Challenge("measure");
      const times = [];
      for (let i = 0; i < 40; i++) {
        context.drawImage(video, 0, 0, 320, 240);
        const frame = context.getImageData(0, 0, 320, 240);
        const started = performance.now();
        challenge.track(frame.data, 320, 240, started);
        times.push(performance.now() - started);
      }
      return times.sort((a, b) => a - b);
    });
    return {
      outcome: "measured",
      detail:
        `live quality (640x480): ${times.length} frames, p50 ${pick(0.5).toFixed(1)} ms, p95 ${pick(0.95).toFixed(1)} ms, ` +
        `${fps.toFixed(1)} analysed frames/s (camera 30 fps); challenge tracking (320x240): ` +
        `p50 ${track[20].toFixed(1)} ms, p95 ${track[38].toFixed(1)} ms`,
    };
  } finally {
    await browser.close();
  }
}

const scenarios = {
  verified: (base) => capture(base, { name: "verified", answer: "live", document: "obama3.jpg" }),
  rejected: (base) => capture(base, { name: "rejected", answer: "live", document: "biden.jpg", keyboard: true }),
  still: (base) => capture(base, { name: "still", answer: "still", document: "obama3.jpg" }),
  "document-camera": (base) =>
    capture(base, { name: "document-camera", answer: "live", document: "camera", dropFirstUpload: true }),
  denied,
  element,
  measure,
};
const expected = {
  verified: "verified",
  rejected: "rejected",
  still: "rejected",
  "document-camera": "verified",
  denied: "camera-error",
  element: "mounted",
  measure: "measured",
};
// What the person is told, where the outcome alone does not say it.
const told = { still: /live person/, denied: /Camera access was denied/ };

const server = await startServer();
let failed = 0;
const report = [];
try {
  for (const name of wanted) {
    const started = Date.now();
    let result;
    try {
      result = await scenarios[name](server.base);
    } catch (error) {
      result = { outcome: "error", detail: String(error?.stack ?? error) };
    }
    const ok = result.outcome === expected[name] && (told[name] ?? /./).test(result.detail);
    if (!ok) failed++;
    const line = `${ok ? "ok" : "FAILED"} ${name}: ${result.outcome} (expected ${expected[name]}) in ${((Date.now() - started) / 1000).toFixed(1)} s — ${result.detail}`;
    console.log(line);
    report.push(line);
  }
} finally {
  server.child.kill();
  writeFileSync(join(SCREENSHOTS, "report.txt"), report.join("\n") + "\n");
  rmSync(work, { recursive: true, force: true });
}
if (failed) {
  console.error(`${failed} scenario(s) failed; screenshots in ${SCREENSHOTS}`);
  console.error(server.log.join("").slice(-4000));
  process.exit(1);
}
