// The demo onboarding page: asks this server for a session (the server holds the secret key),
// runs the SDK, then asks the server to finalize and shows the decision with its scores.
import { Idyntra } from "/demo/sdk/idyntra.js";

const $ = (id) => document.getElementById(id);

async function json(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.title || `HTTP ${response.status}`);
  return body;
}

function showProblem(message) {
  $("problem").textContent = message;
  $("problem").hidden = false;
}

function row(name, check) {
  const tr = document.createElement("tr");
  const cells = check
    ? [name, +check.score.toFixed(3), +check.threshold.toFixed(3), check.passed ? "yes" : "no"]
    : [name, "not checked", "", ""];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = String(text);
    tr.append(td);
  }
  return tr;
}

function showDecision(session) {
  const result = session.result;
  $("decision").textContent = result.decision;
  $("decision").dataset.decision = result.decision;
  $("checks").replaceChildren(
    row("face match", result.face_match),
    row("liveness", result.liveness),
    row("manipulation", result.manipulation),
    row("quality", result.quality),
  );
  $("reasons").textContent = result.reasons.length ? result.reasons.join(", ") : "none";
  $("session-id").textContent = session.id;
  $("outcome").hidden = false;
  $("again").focus();
}

async function decide(id) {
  let session = await json(await fetch(`/demo/session/${id}/finalize`, { method: "POST" }));
  // A decision past the server's deadline arrives later: ask again until it is there.
  for (let i = 0; !session.result && i < 60; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    session = await json(await fetch(`/demo/session/${id}`));
  }
  if (!session.result) throw new Error("the decision is taking too long");
  return session;
}

async function run() {
  $("outcome").hidden = true;
  $("problem").hidden = true;
  const session = await json(await fetch("/demo/session", { method: "POST" }));
  const verification = await Idyntra.create({
    clientToken: session.client_token,
    edgeUrl: location.origin,
    apiUrl: location.origin,
    locale: navigator.language,
  });
  verification.mount($("verify"));
  // For poking at from the console (and for the page's end-to-end test).
  window.demoVerification = verification;
  verification.on("submitted", () => document.body.dataset.stage = "deciding");
  try {
    const submission = await verification.start();
    showDecision(await decide(submission.sessionId));
    document.body.dataset.stage = "decided";
  } finally {
    verification.destroy();
  }
}

$("again").addEventListener("click", () => run().catch((error) => showProblem(error.message)));
run().catch((error) => showProblem(error.message));
