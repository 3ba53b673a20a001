//! Cold start and per-request time of the edge's `attest`, natively:
//! `cargo run --release -p idyntra-edge --example attest_timings [RUNS]` (default 10);
//! or of a running Worker (`edge/worker/measure.sh` starts one):
//! `… --example attest_timings -- --worker http://127.0.0.1:8799 [RUNS]`, whose client tokens are
//! signed by the fixed test key that `… -- --print-jwks` publishes.
//!
//! Captures made from the registry photos (`models/tools/fetch-fixtures.sh`): a 640-pixel-wide
//! selfie, challenge frames 320 pixels wide as the browser SDK sends them (`--challenge-width N`
//! for others), the document photo as fetched. Everything runs on one thread, so the time is
//! the CPU time of one attestation.

use std::time::{Duration, Instant};

use base64::Engine;
use idyntra_edge::{
    AttestRequest, Checker, EdKey, Edge, EdgeSettings, KeySet, PassivePad, jwt, sample,
};
use idyntra_models::liveness_samples::Answer;
use idyntra_types::{CLIENT_TOKEN_SCOPE, ClientTokenClaims, LivenessMode};

/// The clock of the native runs; a Worker checks tokens against its own (real) clock.
const NOW: i64 = 1_800_000_000;

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// A client token for `session`, signed by `backend`, as the header value.
fn authorization(
    backend: &EdKey,
    session: &str,
    now: i64,
    liveness: LivenessMode,
) -> Result<String, Box<dyn std::error::Error>> {
    let claims = ClientTokenClaims {
        iss: "idyntra".to_owned(),
        aud: vec!["idyntra-edge".to_owned()],
        sub: session.to_owned(),
        sid: session.to_owned(),
        acct: "acct".to_owned(),
        nonce: "bench".to_owned(),
        scope: CLIENT_TOKEN_SCOPE.to_owned(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: session.to_owned(),
        liveness,
        require_document: true,
    };
    Ok(format!("Bearer {}", jwt::sign(&claims, backend)?))
}

fn registry_photo(name: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let path = format!("{models}/fixtures/{name}");
    if !std::path::Path::new(&path).exists() {
        let status = std::process::Command::new("bash")
            .arg(format!("{models}/tools/fetch-fixtures.sh"))
            .status()?;
        if !status.success() {
            return Err("fetching the registry photos failed".into());
        }
    }
    Ok(std::fs::read(path)?)
}

/// `POST /v1/attest` to a running edge over HTTP/1.1, as the client `client`: the status line and
/// the time until the whole answer arrived.
fn post(
    base_url: &str,
    client: &str,
    authorization: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(String, Duration), Box<dyn std::error::Error>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let address = base_url.trim_start_matches("http://").trim_end_matches('/');
    let t = Instant::now();
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "POST /v1/attest HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\n\
         CF-Connecting-IP: {client}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    // Read the head, then exactly the announced body (the server may keep the connection open).
    let mut reader = BufReader::new(stream);
    let (mut status, mut length) = (String::new(), 0usize);
    reader.read_line(&mut status)?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut answer = vec![0u8; length];
    reader.read_exact(&mut answer)?;
    Ok((status.trim_end().to_owned(), t.elapsed()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let backend = EdKey::parse(
        "backend-1",
        &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
    )?;
    if args.first().map(String::as_str) == Some("--print-jwks") {
        println!(
            "{}",
            serde_json::to_string(&KeySet::new([backend.public()])?.jwks())?
        );
        return Ok(());
    }
    let worker = if args.first().map(String::as_str) == Some("--worker") {
        let url = args
            .get(1)
            .cloned()
            .ok_or("--worker needs the Worker's URL")?;
        args.drain(..2);
        Some(url)
    } else {
        None
    };
    let now = if worker.is_some() {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )?
    } else {
        NOW
    };
    // `--challenge-width 640` sends the challenge frames as large as the selfie, as the browser
    // SDK did before it sent them at 320 pixels.
    let challenge_width = match args.iter().position(|a| a == "--challenge-width") {
        Some(at) => {
            let width = args
                .get(at + 1)
                .ok_or("--challenge-width needs a number of pixels")?
                .parse()?;
            args.drain(at..at + 2);
            width
        }
        None => sample::CHALLENGE_FRAME_WIDTH,
    };
    let runs: usize = args.first().map(|n| n.parse()).transpose()?.unwrap_or(10);

    let started = Instant::now();
    let edge = Edge::new(
        EdgeSettings::default(),
        KeySet::new([backend.public()])?,
        EdKey::generate("edge-1")?,
        Vec::new(),
        Checker::bundled()?,
    )?;
    if worker.is_none() {
        println!(
            "cold start (models loaded and optimised, keys parsed): {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    let document = registry_photo("obama.jpg")?;
    let frontal = sample::camera_frame(&image::load_from_memory(&document)?.to_rgb8(), 640);
    let turned = sample::camera_frame(
        &image::load_from_memory(&registry_photo("obama2.jpg")?)?.to_rgb8(),
        640,
    );
    let live = sample::active_parts_encoded(
        "bench",
        Answer::Live,
        &frontal,
        &turned,
        Some(&document),
        challenge_width,
        sample::jpeg,
    );
    // The selfie, 8 challenge frames and the document: every frame is checked even though the
    // challenge (which needs two frames per step) then fails.
    let eight: Vec<(&str, Vec<u8>)> = {
        let selfies: Vec<_> = live
            .iter()
            .filter(|(n, _)| *n == "selfie")
            .take(9)
            .collect();
        let challenge = idyntra_models::liveness::challenge_for(b"bench");
        let timeline: Vec<idyntra_types::FrameTiming> = (0..selfies.len())
            .map(|i| idyntra_types::FrameTiming {
                at_ms: 100 * i as u32,
                step: i * challenge.steps.len() / selfies.len(),
            })
            .collect();
        let mut parts: Vec<(&str, Vec<u8>)> =
            selfies.into_iter().map(|(n, b)| (*n, b.clone())).collect();
        parts.push(("timeline", serde_json::to_vec(&timeline)?));
        parts.push(("document", document.clone()));
        parts
    };
    let passive = vec![
        ("selfie", live[0].1.clone()),
        ("document", document.clone()),
    ];

    for (name, parts, liveness) in [
        (
            "selfie + document (passive)",
            &passive,
            LivenessMode::Passive,
        ),
        ("selfie + document + 8 frames", &eight, LivenessMode::Active),
        (
            "selfie + document + 20 frames (live answer)",
            &live,
            LivenessMode::Active,
        ),
    ] {
        let (content_type, body) = sample::body(parts);
        let mut times = Vec::with_capacity(runs);
        let mut outcome = String::new();
        for run in 0..runs {
            let authorization = authorization(&backend, &format!("ses_{run}"), now, liveness)?;
            if let Some(url) = &worker {
                let client = format!("198.51.100.{run}");
                let (status, elapsed) = post(url, &client, &authorization, &content_type, &body)?;
                times.push(elapsed);
                if run == 0 {
                    println!(
                        "  first request: {:.1} ms (the very first builds the isolate's edge)",
                        elapsed.as_secs_f64() * 1000.0
                    );
                }
                outcome = status;
                continue;
            }
            let client = format!("client-{run}");
            let t = Instant::now();
            let result = edge.attest(AttestRequest {
                authorization: Some(&authorization),
                content_type: Some(&content_type),
                body: body.clone().into(),
                client: &client,
                now: NOW,
            });
            times.push(t.elapsed());
            outcome = match result {
                Ok(_) => "attested".to_owned(),
                Err(error) => format!("refused: {}", error.problem().detail.unwrap_or_default()),
            };
        }
        println!(
            "{name}: {} bytes, median {:.1} ms per attestation ({runs} runs; {outcome})",
            body.len(),
            median_ms(times)
        );
    }
    if worker.is_some() {
        return Ok(());
    }

    // The passive capture again, with the passive presentation-attack model on the selfie.
    let started = Instant::now();
    let padded = Edge::new(
        EdgeSettings::default(),
        KeySet::new([backend.public()])?,
        EdKey::generate("edge-1")?,
        Vec::new(),
        Checker::bundled()?.with_passive_pad(PassivePad::bundled(false)?),
    )?;
    println!(
        "cold start with the passive model: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let (content_type, body) = sample::body(&passive);
    let mut times = Vec::with_capacity(runs);
    let mut score = None;
    for run in 0..runs {
        let authorization =
            authorization(&backend, &format!("pad_{run}"), now, LivenessMode::Passive)?;
        let t = Instant::now();
        let answer = padded.attest(AttestRequest {
            authorization: Some(&authorization),
            content_type: Some(&content_type),
            body: body.clone().into(),
            client: &format!("pad-client-{run}"),
            now: NOW,
        });
        times.push(t.elapsed());
        score = answer
            .ok()
            .and_then(|a| a.checks.liveness.pad)
            .map(|pad| pad.score);
    }
    println!(
        "selfie + document (passive) with the passive model: median {:.1} ms per attestation ({runs} runs; liveness score {score:?})",
        median_ms(times)
    );

    // Where a challenge frame's time goes.
    let frame_bytes = &live[1].1;
    let models = idyntra_models::FrameQuality::bundled()?;
    let limits = idyntra_models::DecodeLimits::default();
    let (mut decoding, mut detecting, mut mirroring) = (vec![], vec![], vec![]);
    for _ in 0..runs.max(5) {
        let t = Instant::now();
        let frame = idyntra_models::decode(frame_bytes, &limits)?.image;
        decoding.push(t.elapsed());
        let t = Instant::now();
        models.faces(&frame)?;
        detecting.push(t.elapsed());
        let t = Instant::now();
        models.faces(&image::imageops::flip_horizontal(&frame))?;
        mirroring.push(t.elapsed());
    }
    println!(
        "one {}-byte challenge frame: decode {:.1} ms, detect {:.1} ms, detect on the mirror image {:.1} ms",
        frame_bytes.len(),
        median_ms(decoding),
        median_ms(detecting),
        median_ms(mirroring)
    );
    Ok(())
}
