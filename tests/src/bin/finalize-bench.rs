//! Finalize latency and throughput on the real binary: `finalize-bench [ROUNDS] [UPLOADS]`.
//!
//! Starts `idyntra serve` on a fresh embedded setup (or, with `FINALIZE_BENCH_STORE=postgres`, on a
//! fresh PostgreSQL database with Redis; rate limits off), prepares passive sessions
//! (a session, the embedded edge's attestation of a selfie and a document photo, the media
//! upload), then finalizes them at concurrency 1, 8 and 32 and prints one row per level: requests,
//! throughput, p50/p95/p99. It also times the media upload alone (attestation check, hashing,
//! encryption, storage: everything of the pipeline that is not model inference) at concurrency 8,
//! over `UPLOADS` sessions (8 × `ROUNDS` by default; a few hundred give a steady rate), with the
//! CPU time each upload took in the server and in this client (Linux): unlike the rate, that
//! stays comparable when something else shares the machine.
//! A second table gives, per level, the median of each stage the results record (`timings_ms`):
//! where a finalize's time goes.

use std::time::{Duration, Instant};

use idyntra_tests::flow::{attested, percentile, post_form};
use idyntra_tests::{Setup, http, registry_photo_bytes};

/// Runs `jobs` with at most `concurrency` at once; returns each one's latency (ms) and the wall time.
async fn drive<F, Fut>(jobs: Vec<F>, concurrency: usize) -> (Vec<f64>, Duration)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let permit = gate.clone().acquire_owned().await.expect("open");
        tasks.spawn(async move {
            let at = Instant::now();
            job().await;
            drop(permit);
            at.elapsed().as_secs_f64() * 1000.0
        });
    }
    let mut latencies = Vec::new();
    while let Some(latency) = tasks.join_next().await {
        latencies.push(latency.expect("a task"));
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, started.elapsed())
}

/// CPU time (user and system, every thread) process `pid` has used, in ms; Linux only.
fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // state is field 3, utime and stime fields 14 and 15, in USER_HZ ticks (100 a second).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) * 10.0)
}

fn row(what: &str, latencies: &[f64], wall: Duration) {
    println!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        latencies.len(),
        latencies.len() as f64 / wall.as_secs_f64(),
        percentile(latencies, 50.0),
        percentile(latencies, 95.0),
        percentile(latencies, 99.0),
    );
}

#[tokio::main]
async fn main() {
    let argument = |n: usize| std::env::args().nth(n).and_then(|n| n.parse().ok());
    let rounds: usize = argument(1).unwrap_or(4);
    let upload_count: usize = argument(2).unwrap_or(8 * rounds);
    let postgres = std::env::var("FINALIZE_BENCH_STORE").as_deref() == Ok("postgres");
    let mut setup = if postgres {
        Setup::postgres_and_redis().await
    } else {
        Setup::embedded()
    };
    setup
        .set("IDYNTRA_RATE_LIMIT__ENABLED", "false")
        .set("IDYNTRA_LOG__LEVEL", "warn")
        .set("IDYNTRA_INFERENCE__QUEUE", "256")
        .set("IDYNTRA_DECISION__SYNC_DEADLINE", "120s")
        .set("IDYNTRA_HTTP__REQUEST_TIMEOUT", "120s")
        .set("IDYNTRA_JOBS__IN_SERVER", "false");
    let server = setup.serve();
    let key = setup.create_key("bench", &[]);
    let key = key["secret"].as_str().expect("secret").to_owned();
    let selfie = registry_photo_bytes("obama.jpg");
    let document = registry_photo_bytes("obama2.jpg");
    let levels = [1usize, 8, 32];
    let total: usize = levels.iter().map(|c| c * rounds).sum::<usize>() + upload_count;
    eprintln!("preparing {total} attested sessions…");
    let mut prepared = Vec::with_capacity(total);
    for _ in 0..total {
        prepared.push(
            attested(&server.base_url, &key, &selfie, &document)
                .await
                .expect("a session attested"),
        );
    }
    println!("| what | requests | per second | p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let uploads: Vec<_> = prepared.drain(..upload_count).collect();
    let base = server.base_url.clone();
    let jobs: Vec<_> = uploads
        .into_iter()
        .map(|(id, token, body)| {
            let url = format!("{base}/v1/sessions/{id}/media");
            move || async move {
                let response = post_form(url, &token, body).await.expect("upload");
                assert_eq!(response.status(), 200, "upload");
            }
        })
        .collect();
    let server_pid = server.pid().to_string();
    let cpu = || Some((cpu_ms(&server_pid)?, cpu_ms("self")?));
    let cpu_before = cpu();
    let (latencies, wall) = drive(jobs, 8).await;
    let upload_cpu = cpu_before
        .zip(cpu())
        .map(|((server0, client0), (server1, client1))| {
            let per_upload = |ms: f64| ms / upload_count.max(1) as f64;
            (per_upload(server1 - server0), per_upload(client1 - client0))
        });
    row(
        "media upload, concurrency 8 (no model inference)",
        &latencies,
        wall,
    );
    for (id, token, body) in &prepared {
        let response = post_form(
            format!("{base}/v1/sessions/{id}/media"),
            token,
            body.clone(),
        )
        .await
        .expect("upload");
        assert_eq!(response.status(), 200, "upload");
    }
    let mut ids = prepared.into_iter().map(|(id, _, _)| id);
    let mut stages = Vec::new();
    for concurrency in levels {
        let timings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let jobs: Vec<_> = ids
            .by_ref()
            .take(concurrency * rounds)
            .map(|id| {
                let url = format!("{base}/v1/sessions/{id}/finalize");
                let key = key.clone();
                let timings = timings.clone();
                move || async move {
                    let response = http()
                        .post(url)
                        .bearer_auth(key)
                        .send()
                        .await
                        .expect("finalize");
                    assert_eq!(response.status(), 200, "finalize");
                    let session: serde_json::Value = response.json().await.expect("a session");
                    timings
                        .lock()
                        .expect("timings")
                        .push(session["result"]["timings_ms"].clone());
                }
            })
            .collect();
        let (latencies, wall) = drive(jobs, concurrency).await;
        row(
            &format!("finalize, concurrency {concurrency}"),
            &latencies,
            wall,
        );
        let timings = std::mem::take(&mut *timings.lock().expect("timings"));
        stages.push((concurrency, timings));
    }
    server.stop();
    if let Some((server, client)) = upload_cpu {
        println!();
        println!("CPU per media upload: server {server:.2} ms, benchmark client {client:.2} ms");
    }
    println!();
    let names: std::collections::BTreeSet<String> = stages
        .iter()
        .flat_map(|(_, timings)| timings.iter())
        .filter_map(serde_json::Value::as_object)
        .flat_map(|stage| stage.keys().cloned())
        .collect();
    println!(
        "| stage median ms | {} |",
        levels.map(|c| format!("concurrency {c}")).join(" | ")
    );
    println!("|---|{}", "---|".repeat(levels.len()));
    for name in names {
        let cells: Vec<String> = stages
            .iter()
            .map(|(_, timings)| {
                let mut values: Vec<f64> =
                    timings.iter().filter_map(|t| t[&name].as_f64()).collect();
                values.sort_by(f64::total_cmp);
                if values.is_empty() {
                    "–".to_owned()
                } else {
                    format!("{:.1}", percentile(&values, 50.0))
                }
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}
