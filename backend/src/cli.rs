//! The command line: `serve`, `migrate`, `keys …`, `audit verify`, `verify`,
//! `eval faces|liveness|pad|manipulation`, `edge serve`.
//!
//! Every command reads the same configuration as the server, so it talks to the same database.
//! Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use idyntra_models::{FaceChain, MatchPolicy};
use serde_json::json;
use tokio::net::TcpListener;

use crate::api_keys;
use crate::app::App;
use crate::clock;
use crate::config::{Config, LogConfig, LogFormat};
use crate::eval;
use crate::ids;
use crate::store::{Account, ApiKeyRecord, AuditEvent, GENESIS_HASH, audit_verify_page};
use crate::telemetry;
use crate::verify;

#[derive(Debug, Parser)]
#[command(name = "idyntra", version, about = "Identity verification service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server.
    Serve {
        /// Address to listen on (default from configuration: 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply the configured database's migrations.
    Migrate,
    /// Run jobs (async finalize, webhook deliveries, retention) without serving the API; only
    /// `/healthz`, `/readyz` and `/metrics` are served, for probes and scrapes.
    Worker {
        /// Address of those endpoints (default from configuration: 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage secret API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compare the face of a selfie with the face of an identity document, offline.
    Verify {
        #[arg(long)]
        selfie: PathBuf,
        #[arg(long)]
        document: PathBuf,
        /// Print the result as one JSON object, shaped like the API's `session.result`.
        #[arg(long)]
        json: bool,
        /// Also score the selfie with the passive presentation-attack model (advisory: the
        /// score is reported and decides nothing, as with the API's default policy).
        #[arg(long)]
        passive_pad: bool,
    },
    /// Measure accuracy on labelled photos.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// The edge attestation service on its own.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// Ask a running server whether it is up (exit 0) or not (exit 1): the container
    /// healthcheck of images without a shell or curl.
    Healthcheck {
        /// What to ask; by default `/healthz` of the configured listen address.
        #[arg(long)]
        url: Option<String>,
        /// Ask `/readyz` (database, Redis, models) instead of `/healthz`.
        #[arg(long, conflicts_with = "url")]
        ready: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum EdgeCommand {
    /// Serve `POST /v1/attest`, `GET /.well-known/jwks.json` and `GET /healthz`.
    Serve {
        /// Address to listen on (default from configuration: 127.0.0.1:8787).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Face matching on labelled pairs: ROC, EER, thresholds, held-out rates, failures to detect.
    Faces {
        /// CSV `image_a,image_b,label` (`same` or `different`).
        #[arg(long)]
        pairs: PathBuf,
        /// Folder of the images the pairs name.
        #[arg(long)]
        images: PathBuf,
        /// CSV `image,identity` (default: `identities.csv` beside the pairs, else derived from
        /// the `same` pairs).
        #[arg(long)]
        identities: Option<PathBuf>,
        /// False-match rate to calibrate thresholds for.
        #[arg(long, default_value_t = 0.01)]
        target_fmr: f64,
        /// Threshold to report rates at (default: the bundled calibration).
        #[arg(long)]
        threshold: Option<f32>,
        /// Detector input size (a multiple of 32).
        #[arg(long, default_value_t = FaceChain::CANVAS)]
        canvas: usize,
        #[arg(long)]
        json: bool,
    },
    /// The active liveness check on recorded answers: BPCER, APCER overall and per attack.
    Liveness {
        /// Folder of answers, one sub-folder each with `response.json` and its frames.
        #[arg(long)]
        responses: PathBuf,
        /// Detector input size (a multiple of 32).
        #[arg(long, default_value_t = FaceChain::CANVAS)]
        canvas: usize,
        #[arg(long)]
        json: bool,
    },
    /// The passive presentation-attack model on photos: BPCER, APCER, scores per photo.
    Pad {
        /// Folder of photos of live people taken by themselves (bona fide presentations).
        #[arg(long)]
        bona_fide: PathBuf,
        /// Folder of photos of attacks (prints, screens, masks), when there are some.
        #[arg(long)]
        attacks: Option<PathBuf>,
        /// Liveness threshold to report at (1 − the model's attack score).
        #[arg(long, default_value_t = 1.0 - idyntra_models::pad::DTN_THRESHOLD)]
        threshold: f32,
        #[arg(long)]
        json: bool,
    },
    /// The manipulation model: trained on photos of real people and fakes blended from them,
    /// calibrated and measured on people it did not see.
    Manipulation {
        /// Folder of photos of real people.
        #[arg(long)]
        images: PathBuf,
        /// CSV `image,identity` naming the person in each photo.
        #[arg(long)]
        identities: PathBuf,
        /// Folder of photos of other people, measured with the calibrated threshold.
        #[arg(long)]
        held_out: Option<PathBuf>,
        /// Share of real faces of people not trained on that the threshold may flag.
        #[arg(long, default_value_t = 0.05)]
        target_fpr: f64,
        /// Real samples and fakes made from each photo.
        #[arg(long, default_value_t = 16)]
        variants: usize,
        /// Seed of the random fakes and jitter (the same seed makes the same model).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Writes the model fitted on every person (JSON) to this path.
        #[arg(long)]
        write_model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key (and the account, if it does not exist); prints the secret once.
    Create {
        /// Account name or id.
        #[arg(long)]
        account: String,
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes (default: all).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime, e.g. `90d`; without it the key does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this account's keys (name or id).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Replace a key: prints a new secret; the old key keeps working for the grace period.
    Rotate {
        id: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        grace: Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Seal pending rows, then check the whole hash chain; names the first broken row.
    Verify,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline model commands need neither the configuration nor a runtime.
    match cli.command {
        Command::Eval(command) => return report_failure(run_eval(command)),
        Command::Verify {
            selfie,
            document,
            json,
            passive_pad,
        } => return report_failure(run_verify(&selfie, &document, json, passive_pad)),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    report_failure(runtime.block_on(run(cli)))
}

fn report_failure(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_verify(
    selfie: &Path,
    document: &Path,
    json: bool,
    passive_pad: bool,
) -> anyhow::Result<ExitCode> {
    let chain = FaceChain::bundled(FaceChain::CANVAS)?;
    let passive_pad = passive_pad
        .then(|| idyntra_edge::PassivePad::bundled(false))
        .transpose()?;
    let result = verify::verify(
        selfie,
        document,
        &chain,
        MatchPolicy::MOBILEFACENET,
        passive_pad.as_ref(),
    )?;
    print_report(&result, json, verify::text)
}

/// Prints `report` as pretty JSON, or as `text` makes it for a terminal.
fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_eval(command: EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Faces {
            pairs,
            images,
            identities,
            target_fmr,
            threshold,
            canvas,
            json,
        } => {
            if !(0.0..=1.0).contains(&target_fmr) {
                bail!("--target-fmr must be between 0 and 1");
            }
            let mut policy = MatchPolicy::MOBILEFACENET;
            if let Some(threshold) = threshold {
                policy.threshold = threshold;
            }
            let report = eval::faces(&eval::FaceEvalRequest {
                pairs,
                images,
                identities,
                target_fmr,
                policy,
                canvas,
            })?;
            print_report(&report, json, eval::faces_text)
        }
        EvalCommand::Liveness {
            responses,
            canvas,
            json,
        } => {
            let report = eval::liveness(&responses, canvas)?;
            print_report(&report, json, eval::liveness_text)
        }
        EvalCommand::Pad {
            bona_fide,
            attacks,
            threshold,
            json,
        } => {
            if !(0.0..=1.0).contains(&threshold) {
                bail!("--threshold must be between 0 and 1");
            }
            let report = eval::pad(&bona_fide, attacks.as_deref(), threshold)?;
            print_report(&report, json, eval::pad_text)
        }
        EvalCommand::Manipulation {
            images,
            identities,
            held_out,
            target_fpr,
            variants,
            seed,
            write_model,
            json,
        } => {
            let report = eval::manipulation(&eval::ManipulationEvalRequest {
                images,
                identities,
                held_out,
                target_fpr,
                variants,
                seed,
                write_model,
            })?;
            print_report(&report, json, eval::manipulation_text)
        }
    }
}

/// The URL a healthcheck asks when none is given: the configured listen address, on loopback
/// when it listens on every interface.
fn health_url(listen: SocketAddr, ready: bool) -> String {
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let path = if ready { "/readyz" } else { "/healthz" };
    format!("http://{address}{path}")
}

async fn healthcheck(url: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(response) => {
            eprintln!("unhealthy: {url} answered {}", response.status());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("unhealthy: {url}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Healthcheck {
        url,
        ready,
        timeout,
    } = &cli.command
    {
        let url = match url {
            Some(url) => url.clone(),
            None => health_url(Config::load()?.listen, *ready),
        };
        return healthcheck(&url, *timeout).await;
    }
    // The edge alone needs none of the backend's database or secrets.
    if let Command::Edge(EdgeCommand::Serve { listen }) = cli.command {
        let mut config = Config::load_edge()?;
        if let Some(listen) = listen {
            config.edge.listen = listen;
        }
        let _logs = telemetry::init_logging(&config.log);
        crate::edge_host::serve(config).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = Config::load()?;
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let _logs = telemetry::init_logging(&config.log);
            serve(config).await?;
        }
        Command::Worker { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let _logs = telemetry::init_logging(&config.log);
            let app = App::open(config).await?;
            let listener = TcpListener::bind(app.config.listen)
                .await
                .with_context(|| format!("listen: cannot bind {}", app.config.listen))?;
            let address = listener.local_addr()?;
            tracing::info!(database = app.store.kind(), address = %address, "worker running");
            println!("idyntra worker listening on http://{address}");
            crate::work(app.into_state(), listener, shutdown_signal()).await?;
        }
        command => {
            // Commands print their results on stdout; only warnings go to the log.
            let _logs = telemetry::init_logging(&LogConfig {
                format: LogFormat::Pretty,
                level: "warn".to_owned(),
            });
            let app = App::open(config).await?;
            return match command {
                Command::Migrate => {
                    println!("migrations applied ({})", app.store.kind());
                    Ok(ExitCode::SUCCESS)
                }
                Command::Keys(keys) => run_keys(&app, keys).await,
                Command::Audit(AuditCommand::Verify) => verify_audit(&app).await,
                Command::Serve { .. }
                | Command::Healthcheck { .. }
                | Command::Worker { .. }
                | Command::Eval(_)
                | Command::Verify { .. }
                | Command::Edge(_) => {
                    unreachable!("handled above")
                }
            };
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::open(config).await?;
    app.check_no_dev_key().await?;
    if let Some(key) = app.create_dev_account().await? {
        println!("Created the dev account and its API key. It is shown only this once:");
        println!("  {}", key.expose());
        println!("It works in the dev profile only. Try:");
        println!(
            "  curl -X POST http://{}/v1/sessions -H 'Authorization: Bearer {}'",
            app.config.listen,
            key.expose()
        );
    }
    if app.config.redis_url.is_none() {
        tracing::info!("no redis_url: rate limits and replay protection are per instance");
    }
    let listener = TcpListener::bind(app.config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", app.config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        address = %address,
        profile = %app.config.profile,
        database = app.store.kind(),
        "listening"
    );
    println!("idyntra listening on http://{address}");
    crate::serve(app.into_state(), listener, shutdown_signal()).await?;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn cli_audit(action: &str, target: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        at: clock::now_ms(),
        actor: "cli".to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        request_id: None,
        details,
    }
}

async fn find_or_create_account(app: &App, name_or_id: &str) -> anyhow::Result<Account> {
    if let Some(account) = app.store.find_account(name_or_id).await? {
        return Ok(account);
    }
    if name_or_id.is_empty() || name_or_id.len() > 100 || name_or_id.starts_with("acct_") {
        bail!(
            "--account: no account {name_or_id:?}; a new account needs a name of 1 to 100 characters not starting with acct_"
        );
    }
    let account = Account {
        account_id: ids::new_id("acct"),
        name: name_or_id.to_owned(),
        created_at: clock::now_ms(),
    };
    app.store
        .insert_account(
            &account,
            &cli_audit("account.created", &account.account_id, json!({})),
        )
        .await?;
    Ok(account)
}

fn key_json(key: &ApiKeyRecord, secret: Option<&str>) -> serde_json::Value {
    let mut value = json!({
        "id": key.api_key_id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes.split(' ').collect::<Vec<_>>(),
        "created": clock::to_secs(key.created_at),
        "expires_at": key.expires_at.map(clock::to_secs),
        "revoked_at": key.revoked_at.map(clock::to_secs),
        "last_used_at": key.last_used_at.map(clock::to_secs),
        "rotated_to": key.rotated_to,
        "active": key.is_active(clock::now_ms()),
    });
    if let Some(secret) = secret {
        value["secret"] = json!(secret);
    }
    value
}

fn show_time(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

fn print_new_key(key: &ApiKeyRecord, secret: &str, json: bool) {
    if json {
        println!("{}", key_json(key, Some(secret)));
        return;
    }
    println!(
        "key {} for account {} ({})",
        key.api_key_id, key.account_id, key.name
    );
    println!("scopes: {}", key.scopes);
    println!("expires: {}", show_time(key.expires_at));
    println!("Store this secret now; it is not shown again:");
    println!("{secret}");
}

async fn run_keys(app: &App, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let now = clock::now_ms();
    match command {
        KeysCommand::Create {
            account,
            name,
            scopes,
            expires_in,
            json,
        } => {
            if name.trim().is_empty() || name.len() > 100 {
                bail!("--name: must be 1 to 100 characters");
            }
            let scopes = api_keys::parse_scopes(&scopes)
                .map_err(|message| anyhow::anyhow!("--scopes: {message}"))?;
            let account = find_or_create_account(app, &account).await?;
            let expires_at = expires_in.map(|lifetime| now.saturating_add(clock::ms(lifetime)));
            let (record, plain) = api_keys::mint(
                &app.key_hasher,
                &account.account_id,
                &name,
                scopes,
                expires_at,
                false,
                now,
            );
            let audit = cli_audit(
                "api_key.created",
                &record.api_key_id,
                json!({ "account_id": account.account_id, "scopes": record.scopes }),
            );
            app.store.insert_api_key(&record, &audit).await?;
            print_new_key(&record, plain.expose(), json);
        }
        KeysCommand::List { account, json } => {
            let account_id = match account {
                Some(account) => Some(
                    app.store
                        .find_account(&account)
                        .await?
                        .with_context(|| format!("--account: no account {account:?}"))?
                        .account_id,
                ),
                None => None,
            };
            let keys = app.store.list_api_keys(account_id.as_deref()).await?;
            if json {
                let list: Vec<_> = keys.iter().map(|key| key_json(key, None)).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!("id\taccount\tname\tprefix\tscopes\tstatus\texpires\tlast used");
                for key in keys {
                    let status = if key.revoked_at.is_some() {
                        "revoked"
                    } else if key.is_active(now) {
                        "active"
                    } else {
                        "expired"
                    };
                    println!(
                        "{}\t{}\t{}\t{}…\t{}\t{}\t{}\t{}",
                        key.api_key_id,
                        key.account_id,
                        key.name,
                        key.prefix,
                        key.scopes,
                        status,
                        show_time(key.expires_at),
                        show_time(key.last_used_at)
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let audit = cli_audit("api_key.revoked", &id, json!({}));
            if !app.store.revoke_api_key(&id, now, &audit).await? {
                match app.store.get_api_key(&id).await? {
                    Some(_) => bail!("key {id} is already revoked"),
                    None => bail!("no key {id}"),
                }
            }
            println!("revoked {id}");
        }
        KeysCommand::Rotate { id, grace, json } => {
            let old = app
                .store
                .get_api_key(&id)
                .await?
                .with_context(|| format!("no key {id}"))?;
            if !old.is_active(now) {
                bail!("key {id} is revoked or expired; create a new key instead");
            }
            let (record, plain) = api_keys::mint(
                &app.key_hasher,
                &old.account_id,
                &old.name,
                old.scopes.clone(),
                old.expires_at
                    .map(|at| now.saturating_add((at - old.created_at).max(0))),
                old.is_dev,
                now,
            );
            let old_expires_at = now.saturating_add(clock::ms(grace));
            let audit = cli_audit(
                "api_key.rotated",
                &id,
                json!({ "new_key": record.api_key_id, "grace_seconds": grace.as_secs() }),
            );
            app.store
                .rotate_api_key(&id, &record, old_expires_at, &audit)
                .await?;
            if !json {
                println!(
                    "{id} keeps working until {}",
                    show_time(Some(old_expires_at))
                );
            }
            print_new_key(&record, plain.expose(), json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_audit(app: &App) -> anyhow::Result<ExitCode> {
    while app.store.seal_audit(10_000).await? > 0 {}
    let (head_seq, head_hash) = app.store.audit_head().await?;
    let (mut seq, mut hash) = (0, GENESIS_HASH.to_owned());
    // Only up to the head read above: a running server may seal more rows meanwhile.
    while seq < head_seq {
        let page = app
            .store
            .audit_entries(seq, (head_seq - seq).min(1000))
            .await?;
        if page.is_empty() {
            break;
        }
        match audit_verify_page(&page, seq, hash) {
            Ok((next_seq, next_hash)) => (seq, hash) = (next_seq, next_hash),
            Err(broken) => {
                let row = broken
                    .audit_log_id
                    .map_or_else(|| "missing row".to_owned(), |id| format!("row {id}"));
                eprintln!(
                    "error: audit log broken at chain position {} ({row}): {}",
                    broken.chain_seq, broken.reason
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if (seq, hash.as_str()) != (head_seq, head_hash.as_str()) {
        eprintln!(
            "error: audit log broken at chain position {}: rows after it are missing (the head records {head_seq})",
            seq + 1
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("audit log intact: {seq} rows");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthcheck_asks_the_listen_address_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(health_url(any, false), "http://127.0.0.1:8080/healthz");
        let any6: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(health_url(any6, true), "http://[::1]:9000/readyz");
        let one: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(health_url(one, false), "http://10.1.2.3:8080/healthz");
    }
}
