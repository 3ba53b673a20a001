//! Harness for the end-to-end tests in `tests/`: builds and starts the real `idyntra` binary on a
//! free port, runs its CLI with the same configuration, and provides fresh PostgreSQL databases and
//! a TCP proxy that can cut the database off.

pub mod flow;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `idyntra` binary of this workspace, built once per test run.
///
/// It is built with the selection `cargo test --workspace` makes (every package, the tests
/// included) or, for the release-built benchmarks, `cargo build --release --workspace --bins`:
/// cargo unifies the features of shared dependencies over what is selected, so a narrower build
/// here would compile many dependencies a second time. `IDYNTRA_BINARY` names a binary built
/// already (the benchmarks of a build with other features, or of an older commit).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(prebuilt) = std::env::var_os("IDYNTRA_BINARY") {
            return PathBuf::from(prebuilt);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins"]);
        if cfg!(debug_assertions) {
            build.arg("--tests");
        } else {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the idyntra binary failed");
        // Test binaries live in <target>/<profile>/deps, the benchmark binaries in <target>/<profile>.
        let exe = std::env::current_exe().expect("the test binary has a path");
        let dir = exe.parent().expect("binaries live in a directory");
        let profile_dir = if dir.ends_with("deps") {
            dir.parent().expect("deps lives in the profile directory")
        } else {
            dir
        };
        let binary = profile_dir.join("idyntra");
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// Runs one of the repository's fetch scripts (`bash <script> <destination>`, `script` relative
/// to the repository root): each installs a pinned tool at `destination` and skips the work when
/// it is already there. Returns `destination`. Tests of one binary run in parallel: they fetch one
/// at a time, so only the first installs and none sees a half-made virtual environment.
pub fn fetch_tool(script: &str, destination: PathBuf) -> PathBuf {
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCHING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let repository = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let status = Command::new("bash")
        .arg(repository.join(script))
        .arg(&destination)
        .status()
        .expect("bash runs");
    assert!(status.success(), "{script} failed");
    destination
}

/// A working directory with its own `./data`, and the environment every command gets.
#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// Runs the binary through this command line (e.g. `setpriv …` to drop privileges), and this
    /// binary instead of the one built for the tests.
    pub launcher: Vec<String>,
    pub program: Option<PathBuf>,
}

impl Setup {
    /// The embedded default (dev profile, SQLite under `./data`), JSON logs.
    pub fn embedded() -> Self {
        Self::in_dir(tempfile::tempdir().expect("temp dir"))
    }

    /// The embedded default in `dir`.
    pub fn in_dir(dir: tempfile::TempDir) -> Self {
        Self {
            dir,
            env: Vec::new(),
            launcher: Vec::new(),
            program: None,
        }
    }

    /// PostgreSQL (a fresh database) and Redis (a private key prefix).
    pub async fn postgres_and_redis() -> Self {
        let mut setup = Self::embedded();
        let database = fresh_postgres_database().await;
        setup.set("IDYNTRA_DATABASE_URL", &database);
        setup.use_redis();
        setup
    }

    /// Redis, under a key prefix of this setup's own.
    pub fn use_redis(&mut self) -> &mut Self {
        self.set("IDYNTRA_REDIS_URL", &redis_url());
        self.set(
            "IDYNTRA_REDIS_KEY_PREFIX",
            &format!("e2e:{}:", uuid::Uuid::new_v4().simple()),
        )
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn command(&self) -> Command {
        let program = self.program.as_deref().unwrap_or_else(|| binary());
        let mut command = match self.launcher.split_first() {
            Some((launcher, args)) => {
                let mut command = Command::new(launcher);
                command.args(args).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path()).env_clear();
        for name in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("idyntra runs")
    }

    /// `keys create … --json`, returning the parsed answer (with `secret`).
    pub fn create_key(&self, account: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "keys",
            "create",
            "--account",
            account,
            "--name",
            "e2e",
            "--json",
        ];
        args.extend_from_slice(extra);
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("keys create --json prints JSON")
    }

    /// Starts `idyntra serve` on a free port and waits until it listens.
    pub fn serve(&self) -> Server {
        self.start(
            &["serve", "--listen", "127.0.0.1:0"],
            "idyntra listening on ",
        )
    }

    /// Starts `idyntra edge serve` on a free port and waits until it listens.
    pub fn serve_edge(&self) -> Server {
        self.start(
            &["edge", "serve", "--listen", "127.0.0.1:0"],
            "idyntra edge listening on ",
        )
    }

    /// Starts `idyntra worker` (its operations endpoints on a free port) and waits until it runs.
    pub fn worker(&self) -> Server {
        self.start(
            &["worker", "--listen", "127.0.0.1:0"],
            "idyntra worker listening on ",
        )
    }

    fn start(&self, args: &[&str], ready: &str) -> Server {
        let log_path = self
            .dir
            .path()
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("idyntra starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(ready) {
                        return Server {
                            child,
                            base_url: url.to_owned(),
                            banner,
                            log_path,
                        };
                    }
                    banner.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!("idyntra {args:?} did not start; stdout: {banner:?}; log: {log}");
                }
            }
        }
    }
}

/// A running `idyntra serve` or `idyntra edge serve`, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base_url: String,
    /// What it printed on stdout before listening (the dev key banner on a first start).
    pub banner: Vec<String>,
    log_path: PathBuf,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops it with SIGTERM-like kill and waits.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server the tests use; they fail, never skip, when it is not there.
pub fn postgres_admin_url() -> String {
    std::env::var("IDYNTRA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("IDYNTRA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// `host:port` of the PostgreSQL server the tests use.
pub fn postgres_address() -> String {
    let admin = postgres_admin_url();
    let after_scheme = admin
        .split_once("://")
        .map_or(admin.as_str(), |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

/// Creates an empty database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut connection = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL is required for these tests ({admin}): {error}")
        });
    let name = format!("idyntra_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("create database {name}"))
        .execute(&mut connection)
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("URL has a database");
    format!("{base}/{name}")
}

/// Forwards a local port to a target, until [`TcpProxy::cut`] drops every connection and stops
/// accepting: the way a database becomes unreachable without stopping the shared server.
#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, task }
    }

    /// Closes the listener and every forwarded connection (the join set is dropped with the task).
    pub fn cut(&self) {
        self.task.abort();
    }
}

/// An HTTP client that does not follow redirects and times out.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Sending a request in a test: any transport failure is a failed test.
#[allow(async_fn_in_trait)] // Used only in these tests, never as a trait object.
pub trait Answer {
    /// The response, whatever its status.
    async fn answer(self) -> reqwest::Response;
    /// The response body as JSON.
    async fn value(self) -> serde_json::Value;
    /// The response body as text.
    async fn text_body(self) -> String;
}

impl Answer for reqwest::RequestBuilder {
    async fn answer(self) -> reqwest::Response {
        self.send().await.expect("the request reaches the server")
    }

    async fn value(self) -> serde_json::Value {
        self.answer().await.json().await.expect("a JSON body")
    }

    async fn text_body(self) -> String {
        self.answer().await.text().await.expect("a text body")
    }
}

/// Bytes of a registry photo (`models/tools/fetch-fixtures.sh` fetches them on first use); fails
/// loudly when they cannot be fetched.
pub fn registry_photo_bytes(name: &str) -> Vec<u8> {
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let models = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let path = models.join("fixtures").join(name);
    if !path.exists() {
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let status = Command::new("bash")
                .arg(models.join("tools/fetch-fixtures.sh"))
                .status()
                .expect("bash runs");
            assert!(status.success(), "fetching the registry photos failed");
        }
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A new session of the account whose secret `key` is given: its id, its client token and the
/// nonce inside the token (a browser never needs to read it; a test does).
pub async fn session_with_nonce(server: &Server, key: &str) -> (String, String, String) {
    let session: serde_json::Value = http()
        .post(server.url("/v1/sessions"))
        .bearer_auth(key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST /v1/sessions answers")
        .json()
        .await
        .expect("a session is JSON");
    let token = session["client_token"]
        .as_str()
        .expect("a client token")
        .to_owned();
    let claims = jwt_claims(&token);
    (
        session["id"].as_str().expect("a session id").to_owned(),
        token,
        claims["nonce"].as_str().expect("a nonce").to_owned(),
    )
}

/// The claims of a JWT, read without checking its signature.
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .expect("a JWT's payload is base64url JSON")
}

/// The JSON Web Key Set at `url`.
pub async fn jwks(url: &str) -> serde_json::Value {
    http()
        .get(url)
        .send()
        .await
        .expect("the JWKS answers")
        .json()
        .await
        .expect("a JWKS is JSON")
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// A webhook receiver on a free local port. It answers `200` except to the first `hang`
/// requests, which it holds open without answering (a receiver that is slow or dies mid-request).
#[derive(Debug)]
pub struct WebhookReceiver {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl WebhookReceiver {
    pub async fn start(hang: usize) -> Self {
        use std::sync::{Arc, Mutex};
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let log = log.clone();
                async move {
                    let count = {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        log.push(Received { headers, body });
                        log.len()
                    };
                    if count <= hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
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
        Self { url, received }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `within` for a request whose body has `"type":"<event_type>"`.
    pub async fn wait_for(&self, event_type: &str, within: Duration) -> Received {
        let needle = format!("\"type\":\"{event_type}\"");
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self
                .received()
                .into_iter()
                .find(|r| r.body.contains(&needle))
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {event_type} webhook within {within:?}; got {:?}",
                self.received().iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Rows of `table` (`media`, `session_key`…) that belong to `session_id`, read straight from the
/// setup's database.
pub async fn count_rows(setup: &Setup, table: &str, session_id: &str) -> i64 {
    let sql = format!("select count(*) from {table} where session_id = $1");
    match setup
        .env
        .iter()
        .find(|(name, _)| name == "IDYNTRA_DATABASE_URL")
    {
        Some((_, url)) => {
            let pool = sqlx::PgPool::connect(url).await.expect("the test database");
            sqlx::query_scalar(&sql)
                .bind(session_id)
                .fetch_one(&pool)
                .await
                .expect("a count")
        }
        None => {
            let path = setup.dir.path().join("data/idyntra.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("the embedded database");
            sqlx::query_scalar(&sql)
                .bind(session_id)
                .fetch_one(&pool)
                .await
                .expect("a count")
        }
    }
}
