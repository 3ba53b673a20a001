//! Fault drill on the real binaries: `fault-drill [SECONDS_PER_PHASE]` (default 12).
//!
//! Starts a private PostgreSQL cluster and a private Redis (so the faults touch nothing else),
//! `idyntra serve` (jobs off) and `idyntra worker` on them, and a webhook receiver; keeps a steady
//! load running — light clients creating and reading sessions, flow clients doing whole
//! verifications (create, attest, upload, finalize: half synchronous, half `respond-async`) and
//! retrying `503`s after `Retry-After` as an integrator would — through these phases:
//!
//! 1. baseline;
//! 2. Redis stopped, then started again;
//! 3. PostgreSQL restarted;
//! 4. the worker SIGKILLed while a job runs, restarted halfway through the phase;
//! 5. the model engine failing on every run (`inference.fault_marker`), healed halfway;
//! 6. the webhook receiver answering after the delivery timeout;
//! 7. recovery.
//!
//! Then it stops the load and accounts: every created session is still there, every finalize
//! accepted ends decided, every event of those sessions is acknowledged by the receiver, no
//! session is decided twice. It prints per-phase numbers (requests, answers by class, latency)
//! and the breaker's transitions, and exits non-zero on any `500`, any `503` without
//! `Retry-After`, anything lost or duplicated, or a breaker that never opened or never closed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idyntra_tests::flow::{attested, percentile, post_form};
use idyntra_tests::{Setup, registry_photo_bytes};
use serde_json::{Value, json};

const PHASES: [&str; 7] = [
    "baseline",
    "Redis stopped",
    "PostgreSQL restarted",
    "worker killed mid-job",
    "model engine failing",
    "webhook receiver timing out",
    "recovery",
];
const LIGHT_CLIENTS: usize = 6;
const FLOW_CLIENTS: usize = 2;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(1);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn run(command: &mut Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throwaway PostgreSQL cluster on a free port, run as the `postgres` user when this is root.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql")
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("initdb");
        let dir = tempfile::tempdir().expect("temp dir");
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        if as_root {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let postgres = Self {
            dir,
            port: free_port(),
            bin,
        };
        run(postgres
            .as_owner("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(postgres.data()));
        postgres.pg_ctl("start");
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_owner(&self, tool: &str) -> Command {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        if is_root {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
                .arg(self.bin.join(tool));
            command
        } else {
            Command::new(self.bin.join(tool))
        }
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(self
            .as_owner("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.path().join("postgres.log"))
            .args(["-o", &options, "-m", "fast", "-w", action]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A throwaway Redis on a fixed port, so it can come back where the server expects it.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Self {
        let mut redis = Self { port, child: None };
        redis.resume();
        redis
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One webhook request: its event, and whether it was answered before the sender's timeout.
#[derive(Debug, Clone)]
struct Delivery {
    /// Seconds since the receiver started.
    at: f64,
    event_id: String,
    event_type: String,
    session: String,
    acknowledged: bool,
}

/// A receiver that answers `200`, or, while `slow`, only after the delivery timeout.
struct Receiver {
    url: String,
    started: Instant,
    slow: Arc<AtomicBool>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start() -> Self {
        let slow = Arc::new(AtomicBool::new(false));
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let (is_slow, log) = (slow.clone(), deliveries.clone());
        let started = Instant::now();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let (is_slow, log) = (is_slow.clone(), log.clone());
                async move {
                    let slow = is_slow.load(Ordering::SeqCst);
                    let event: Value = serde_json::from_str(&body).unwrap_or_default();
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Delivery {
                            at: started.elapsed().as_secs_f64(),
                            event_id: event["id"].as_str().unwrap_or_default().to_owned(),
                            event_type: event["type"].as_str().unwrap_or_default().to_owned(),
                            session: event["data"]["object"]["id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            acknowledged: !slow,
                        });
                    if slow {
                        tokio::time::sleep(WEBHOOK_TIMEOUT * 3).await;
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            started,
            slow,
            deliveries,
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One answer (or transport failure, `status` 0) seen by a client.
#[derive(Debug, Clone)]
struct Sample {
    phase: usize,
    kind: &'static str,
    status: u16,
    ms: f64,
    retry_after: bool,
}

/// What the clients saw and what they were promised.
#[derive(Default)]
struct Ledger {
    samples: Vec<Sample>,
    /// Sessions answered `201`.
    created: Vec<String>,
    /// Sessions whose upload was answered `200` (a `session.submitted` event is owed).
    submitted: Vec<String>,
    /// Sessions whose finalize was accepted (`200` or `202`): a decision is owed.
    finalized: Vec<String>,
    /// Flows given up on after repeated refusals, by step.
    abandoned: BTreeMap<&'static str, usize>,
}

struct Drill {
    server_url: String,
    key: String,
    client: reqwest::Client,
    phase: AtomicUsize,
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
    selfie: Vec<u8>,
    document: Vec<u8>,
    started: Instant,
}

impl Drill {
    fn record(&self, kind: &'static str, at: Instant, answer: &reqwest::Result<reqwest::Response>) {
        let (status, retry_after) = match answer {
            Ok(response) => (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            ),
            Err(_) => (0, false),
        };
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .samples
            .push(Sample {
                phase: self.phase.load(Ordering::SeqCst),
                kind,
                status,
                ms: at.elapsed().as_secs_f64() * 1000.0,
                retry_after,
            });
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A light client: create a session, read it back, at about ten requests a second.
    async fn light(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let created = self
                .client
                .post(format!("{}/v1/sessions", self.server_url))
                .bearer_auth(&self.key)
                .json(&json!({"reference": "drill"}))
                .send()
                .await;
            self.record("create", at, &created);
            if let Ok(response) = created
                && response.status() == 201
                && let Ok(session) = response.json::<Value>().await
            {
                let id = session["id"].as_str().unwrap_or_default().to_owned();
                self.ledger().created.push(id.clone());
                let at = Instant::now();
                let read = self
                    .client
                    .get(format!("{}/v1/sessions/{id}", self.server_url))
                    .bearer_auth(&self.key)
                    .send()
                    .await;
                self.record("read", at, &read);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `request` until it is answered with something other than `503` or a transport
    /// failure, waiting `Retry-After` (or a second) between tries; gives up after `tries`.
    async fn persist(
        &self,
        kind: &'static str,
        tries: usize,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Option<reqwest::Response> {
        for _ in 0..tries {
            let at = Instant::now();
            let answer = request().send().await;
            self.record(kind, at, &answer);
            let wait = match &answer {
                Ok(response) if response.status() == 503 => response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs),
                Ok(_) => return answer.ok(),
                Err(_) => Duration::from_secs(1),
            };
            tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
        }
        self.ledger()
            .abandoned
            .entry(kind)
            .and_modify(|n| *n += 1)
            .or_insert(1);
        None
    }

    /// A flow client: whole verifications, one after the other.
    async fn flow(self: Arc<Self>, client_index: usize) {
        let mut round = client_index;
        while !self.stop.load(Ordering::SeqCst) {
            round += FLOW_CLIENTS;
            let at = Instant::now();
            let prepared =
                attested(&self.server_url, &self.key, &self.selfie, &self.document).await;
            let status = if prepared.is_ok() { 200 } else { 0 };
            self.ledger().samples.push(Sample {
                phase: self.phase.load(Ordering::SeqCst),
                kind: "create+attest",
                status,
                ms: at.elapsed().as_secs_f64() * 1000.0,
                retry_after: false,
            });
            let Ok((id, token, body)) = prepared else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            self.ledger().created.push(id.clone());
            let media = format!("{}/v1/sessions/{id}/media", self.server_url);
            let mut uploaded = None;
            for _ in 0..20 {
                let at = Instant::now();
                let answer = post_form(media.clone(), &token, body.clone()).await;
                self.record("upload", at, &answer);
                match answer {
                    Ok(response) if response.status() == 503 => {}
                    Ok(response) => {
                        uploaded = Some(response.status());
                        break;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match uploaded {
                Some(status) if status == 200 => self.ledger().submitted.push(id.clone()),
                _ => {
                    self.ledger()
                        .abandoned
                        .entry("upload")
                        .and_modify(|n| *n += 1)
                        .or_insert(1);
                    continue;
                }
            }
            let asynchronous = round % 2 == 1;
            let finalize = format!("{}/v1/sessions/{id}/finalize", self.server_url);
            let answer = self
                .persist("finalize", 30, || {
                    let request = self
                        .client
                        .post(&finalize)
                        .bearer_auth(&self.key)
                        .header("idempotency-key", format!("finalize-{id}"));
                    if asynchronous {
                        request.header("prefer", "respond-async")
                    } else {
                        request
                    }
                })
                .await;
            if let Some(response) = answer
                && (response.status() == 200 || response.status() == 202)
            {
                self.ledger().finalized.push(id);
            }
        }
    }
}

/// `idyntra_inference_breaker_open` of a process (`None`: not answering).
async fn breaker_open(client: &reqwest::Client, base: &str) -> Option<bool> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with("idyntra_inference_breaker_open"))
        .and_then(|line| line.split_whitespace().last())
        .map(|value| value != "0")
}

/// `idyntra_inference_in_flight` of a process.
async fn in_flight(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with("idyntra_inference_in_flight"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::main(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // One script, read top to bottom.
async fn main() {
    let phase_seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let phase = Duration::from_secs(phase_seconds);
    eprintln!("starting PostgreSQL, Redis, the server and the worker…");
    let postgres = Postgres::start();
    let mut redis = Redis::start(free_port());
    let receiver = Receiver::start().await;
    let mut setup = Setup::embedded();
    let fault_marker = setup.dir.path().join("fail-models");
    let fault_setting = fault_marker.display().to_string();
    let settings = [
        ("IDYNTRA_DATABASE_URL", postgres.url()),
        ("IDYNTRA_REDIS_URL", redis.url()),
        ("IDYNTRA_JOBS__IN_SERVER", "false".to_owned()),
        ("IDYNTRA_JOBS__LEASE", "10s".to_owned()),
        ("IDYNTRA_JOBS__POLL_INTERVAL", "200ms".to_owned()),
        (
            "IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS",
            "1000000".to_owned(),
        ),
        ("IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS", "1000000".to_owned()),
        ("IDYNTRA_INFERENCE__FAULT_MARKER", fault_setting),
        ("IDYNTRA_INFERENCE__BREAKER_FAILURES", "3".to_owned()),
        ("IDYNTRA_INFERENCE__BREAKER_COOLDOWN", "3s".to_owned()),
        (
            "IDYNTRA_WEBHOOKS__TIMEOUT",
            format!("{}s", WEBHOOK_TIMEOUT.as_secs()),
        ),
        ("IDYNTRA_WEBHOOKS__INITIAL_BACKOFF", "1s".to_owned()),
        ("IDYNTRA_WEBHOOKS__MAX_BACKOFF", "4s".to_owned()),
        ("IDYNTRA_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("IDYNTRA_LOG__LEVEL", "warn".to_owned()),
    ];
    for (name, value) in &settings {
        setup.set(name, value);
    }
    let server = setup.serve();
    let mut worker = Some(setup.worker());
    let key = setup.create_key("drill", &[]);
    let key = key["secret"].as_str().expect("a secret").to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let endpoint = client
        .post(server.url("/v1/webhook_endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .expect("webhook endpoint");
    assert_eq!(endpoint.status(), 201, "webhook endpoint");

    let drill = Arc::new(Drill {
        server_url: server.base_url.clone(),
        key,
        client: client.clone(),
        phase: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        ledger: Mutex::default(),
        selfie: registry_photo_bytes("obama.jpg"),
        document: registry_photo_bytes("obama2.jpg"),
        started: Instant::now(),
    });
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..LIGHT_CLIENTS {
        load.spawn(drill.clone().light());
    }
    for index in 0..FLOW_CLIENTS {
        load.spawn(drill.clone().flow(index));
    }
    // The breakers of both processes, sampled every 200 ms.
    let transitions: Arc<Mutex<Vec<String>>> = Arc::default();
    let watcher = {
        let (drill, transitions, client) = (drill.clone(), transitions.clone(), client.clone());
        let server_url = server.base_url.clone();
        let worker_url = Arc::new(Mutex::new(
            worker
                .as_ref()
                .map_or_else(String::new, |w| w.base_url.clone()),
        ));
        let worker_address = worker_url.clone();
        let task = tokio::spawn(async move {
            let mut last: HashMap<&str, bool> = HashMap::new();
            while !drill.stop.load(Ordering::SeqCst) {
                let worker_url = worker_address
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                for (name, url) in [("server", server_url.clone()), ("worker", worker_url)] {
                    let Some(open) = breaker_open(&client, &url).await else {
                        continue;
                    };
                    let previous = last.insert(name, open);
                    // Every change, and a breaker already open when first seen.
                    if previous.is_some_and(|was| was != open) || (previous.is_none() && open) {
                        transitions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!(
                                "{:.1} s ({}): {name} breaker {}",
                                drill.seconds(),
                                PHASES[drill.phase.load(Ordering::SeqCst)],
                                if open { "opened" } else { "closed" }
                            ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        (task, worker_url)
    };
    let mut events = Vec::new();
    let mut note = |drill: &Drill, what: String| {
        eprintln!("{:.1} s: {what}", drill.seconds());
        events.push(format!("{:.1} s: {what}", drill.seconds()));
    };
    for (index, name) in PHASES.iter().enumerate() {
        drill.phase.store(index, Ordering::SeqCst);
        note(&drill, format!("phase {name}"));
        match index {
            1 => {
                redis.stop();
                note(&drill, "Redis stopped".to_owned());
                tokio::time::sleep(phase).await;
                redis.resume();
                note(&drill, "Redis started".to_owned());
            }
            2 => {
                let at = Instant::now();
                tokio::task::block_in_place(|| postgres.pg_ctl("restart"));
                note(
                    &drill,
                    format!(
                        "PostgreSQL restarted in {:.1} s",
                        at.elapsed().as_secs_f64()
                    ),
                );
                tokio::time::sleep(phase.saturating_sub(at.elapsed())).await;
            }
            3 => {
                let deadline = Instant::now() + phase / 2;
                let mut running = 0;
                while Instant::now() < deadline {
                    let url = worker
                        .as_ref()
                        .map_or_else(String::new, |w| w.base_url.clone());
                    running = in_flight(&client, &url).await;
                    if running > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let killed_at = Instant::now();
                if let Some(old) = worker.take() {
                    old.stop();
                }
                note(
                    &drill,
                    format!("worker SIGKILLed with {running} model run(s) in flight"),
                );
                tokio::time::sleep(phase / 2).await;
                let restarted = tokio::task::block_in_place(|| setup.worker());
                *watcher.1.lock().unwrap_or_else(|e| e.into_inner()) = restarted.base_url.clone();
                worker = Some(restarted);
                note(&drill, "worker restarted".to_owned());
                tokio::time::sleep(phase.saturating_sub(killed_at.elapsed())).await;
            }
            4 => {
                std::fs::write(&fault_marker, b"").expect("fault file");
                note(&drill, "model engine failing".to_owned());
                tokio::time::sleep(phase / 2).await;
                std::fs::remove_file(&fault_marker).expect("fault file");
                note(&drill, "model engine healed".to_owned());
                tokio::time::sleep(phase / 2).await;
            }
            5 => {
                receiver.slow.store(true, Ordering::SeqCst);
                note(
                    &drill,
                    "webhook receiver answering after the timeout".to_owned(),
                );
                // The worker may still be busy with jobs the earlier faults delayed: stay slow
                // until deliveries have met the slow receiver (or three phases have passed).
                let at = Instant::now();
                tokio::time::sleep(phase).await;
                while receiver
                    .deliveries()
                    .iter()
                    .filter(|d| !d.acknowledged)
                    .count()
                    < 5
                    && at.elapsed() < phase * 3
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                receiver.slow.store(false, Ordering::SeqCst);
                note(&drill, "webhook receiver answering in time".to_owned());
            }
            _ => tokio::time::sleep(phase).await,
        }
    }
    drill.stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}
    let _ = watcher.0.await;
    let load_seconds = drill.seconds();

    // Accounting: wait for the owed decisions and events, then count.
    let (created, submitted, finalized, abandoned) = {
        let ledger = drill.ledger();
        (
            ledger.created.clone(),
            ledger.submitted.clone(),
            ledger.finalized.clone(),
            ledger.abandoned.clone(),
        )
    };
    let finalized_set: HashSet<&String> = finalized.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut undecided: Vec<String> = finalized.clone();
    while !undecided.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in undecided {
            let status = client
                .get(server.url(&format!("/v1/sessions/{id}")))
                .bearer_auth(&drill.key)
                .send()
                .await
                .ok();
            let decided = match status {
                Some(response) if response.status() == 200 => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|session| session["status"].as_str().map(str::to_owned))
                    .is_some_and(|status| {
                        ["verified", "rejected", "needs_review"].contains(&status.as_str())
                    }),
                _ => false,
            };
            if !decided {
                still.push(id);
            }
        }
        undecided = still;
        if !undecided.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let owed = |deliveries: &[Delivery]| -> (usize, usize) {
        let acknowledged: HashSet<(&str, &str)> = deliveries
            .iter()
            .filter(|delivery| delivery.acknowledged)
            .map(|delivery| (delivery.session.as_str(), delivery.event_type.as_str()))
            .collect();
        let submitted_missing = submitted
            .iter()
            .filter(|id| !acknowledged.contains(&(id.as_str(), "session.submitted")))
            .count();
        let decision_missing = finalized
            .iter()
            .filter(|id| {
                ![
                    "session.verified",
                    "session.rejected",
                    "session.needs_review",
                ]
                .iter()
                .any(|kind| acknowledged.contains(&(id.as_str(), *kind)))
            })
            .count();
        (submitted_missing, decision_missing)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while owed(&receiver.deliveries()) != (0, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deliveries = receiver.deliveries();
    let (submitted_missing, decision_missing) = owed(&deliveries);
    let mut lost_sessions = 0;
    for id in &created {
        let found = client
            .get(server.url(&format!("/v1/sessions/{id}")))
            .bearer_auth(&drill.key)
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if !found {
            lost_sessions += 1;
        }
    }
    let mut decisions: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut acknowledgements: HashMap<&str, usize> = HashMap::new();
    for delivery in &deliveries {
        if delivery.event_type != "session.submitted" {
            decisions
                .entry(delivery.session.as_str())
                .or_default()
                .insert(delivery.event_id.as_str());
        }
        if delivery.acknowledged {
            *acknowledgements
                .entry(delivery.event_id.as_str())
                .or_default() += 1;
        }
    }
    let decided_twice = decisions.values().filter(|events| events.len() > 1).count();
    let distinct_events: HashSet<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    let acknowledged_twice = acknowledgements.values().filter(|&&n| n > 1).count();
    let foreign = deliveries
        .iter()
        .filter(|delivery| {
            delivery.event_type != "session.submitted" && !finalized_set.contains(&delivery.session)
        })
        .count();

    // The report.
    let samples = drill.ledger().samples.clone();
    println!(
        "Fault drill, {phase_seconds} s per phase, {LIGHT_CLIENTS} light clients (create + read, ~10 requests/s each) and {FLOW_CLIENTS} flow clients (create, attest, upload, finalize).\n"
    );
    println!(
        "| phase | requests | 2xx | 4xx | 503 (all with Retry-After) | other 5xx | no answer | p50 ms | p95 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut server_errors = 0;
    let mut bare_503 = 0;
    for (index, name) in PHASES.iter().enumerate() {
        let of_phase: Vec<&Sample> = samples.iter().filter(|s| s.phase == index).collect();
        let count = |test: &dyn Fn(&Sample) -> bool| of_phase.iter().filter(|s| test(s)).count();
        let unavailable = count(&|s| s.status == 503);
        let without_retry_after = count(&|s| s.status == 503 && !s.retry_after);
        let other = count(&|s| s.status >= 500 && s.status != 503);
        server_errors += other;
        bare_503 += without_retry_after;
        let mut latencies: Vec<f64> = of_phase
            .iter()
            .filter(|s| s.status != 0 && s.kind != "create+attest")
            .map(|s| s.ms)
            .collect();
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {} | {} | {unavailable}{} | {other} | {} | {:.1} | {:.1} |",
            of_phase.len(),
            count(&|s| (200..300).contains(&s.status)),
            count(&|s| (400..500).contains(&s.status)),
            if without_retry_after > 0 {
                format!(" ({without_retry_after} without)")
            } else {
                String::new()
            },
            count(&|s| s.status == 0),
            percentile(&latencies, 50.0),
            percentile(&latencies, 95.0),
        );
    }
    let statuses: BTreeMap<(&str, u16), usize> =
        samples.iter().fold(BTreeMap::new(), |mut counts, sample| {
            *counts.entry((sample.kind, sample.status)).or_default() += 1;
            counts
        });
    println!("\nAnswers by request and status (0: no answer): {statuses:?}\n");
    println!("Timeline:");
    for line in &events {
        println!("- {line}");
    }
    let transitions = transitions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for line in &transitions {
        println!("- {line}");
    }
    let late = deliveries
        .iter()
        .filter(|delivery| !delivery.acknowledged)
        .count();
    let late_window = deliveries
        .iter()
        .filter(|delivery| !delivery.acknowledged)
        .map(|delivery| delivery.at)
        .fold((f64::MAX, 0.0f64), |(first, last), at| {
            (first.min(at), last.max(at))
        });
    // On the drill's clock.
    let offset = drill.started.duration_since(receiver.started).as_secs_f64();
    let late_window = (late_window.0 - offset, late_window.1 - offset);
    println!("\nAccounting after {load_seconds:.0} s of load:");
    println!(
        "- sessions created (201): {}; missing afterwards: {lost_sessions}",
        created.len()
    );
    println!(
        "- uploads accepted: {}; finalizes accepted (200/202): {}; not decided within 3 min: {}",
        submitted.len(),
        finalized.len(),
        undecided.len()
    );
    println!("- flows given up by the client after repeated 503s: {abandoned:?}");
    println!(
        "- webhook requests: {}, distinct events: {}; events owed and never acknowledged: {} session.submitted, {} decisions",
        deliveries.len(),
        distinct_events.len(),
        submitted_missing,
        decision_missing
    );
    if late > 0 {
        println!(
            "- webhook requests answered only after the timeout (so sent again): {late}, from {:.1} s to {:.1} s",
            late_window.0, late_window.1
        );
    }
    println!(
        "- sessions with two different decision events: {decided_twice}; events acknowledged more than once: {acknowledged_twice}; sessions decided although the client never saw its finalize accepted (it gave up waiting): {foreign}"
    );
    let opened = transitions.iter().any(|line| line.contains("opened"));
    let closed = transitions.iter().any(|line| line.contains("closed"));
    let mut failures = Vec::new();
    if server_errors > 0 {
        failures.push(format!("{server_errors} answers 5xx other than 503"));
    }
    if bare_503 > 0 {
        failures.push(format!("{bare_503} answers 503 without Retry-After"));
    }
    if lost_sessions > 0 || !undecided.is_empty() {
        failures.push("sessions lost or left undecided".to_owned());
    }
    if submitted_missing + decision_missing > 0 {
        failures.push("events never acknowledged".to_owned());
    }
    if decided_twice > 0 {
        failures.push("sessions decided twice".to_owned());
    }
    if !opened || !closed {
        failures.push("the breaker did not open and close".to_owned());
    }
    drop(worker);
    drop(server);
    drop(redis);
    drop(postgres);
    if failures.is_empty() {
        println!("\nResult: nothing lost, nothing decided twice.");
    } else {
        println!("\nResult: FAILED: {}", failures.join("; "));
        std::process::exit(1);
    }
}
