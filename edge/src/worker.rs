//! The Cloudflare Worker host (feature `worker`, built by `worker-build`, configured by the root
//! `wrangler.toml`): `POST /v1/attest`, `GET /.well-known/jwks.json` and `GET /healthz` over the
//! same core as the native host.
//!
//! Settings are Worker variables; keys are secrets (`wrangler secret put`), never in the file:
//! `EDGE_PRIVATE_KEY` (the attestation key: PKCS#8 PEM or base64 seed), `CLIENT_TOKEN_JWKS` (the
//! backend's `/.well-known/jwks.json`, whose keys sign client tokens), and optionally
//! `EDGE_RETIRED_JWKS` (earlier attestation keys, still published).

mod ledger;

use std::cell::OnceCell;
use std::rc::Rc;

use idyntra_types::{JwkSet, Problem};
use worker::{Context, Env, Headers, Method, Request, Response, event};

use crate::attest::{AttestError, AttestRequest, Edge, EdgeSettings};
use crate::capture::{CaptureError, CaptureLimits};
use crate::checks::Checker;
use crate::keys::{EdKey, KeySet, PublicKey};
use ledger::Ledger;

thread_local! {
    /// The edge of this isolate, built on its first request (the models load once per isolate).
    static EDGE: OnceCell<Result<Rc<Edge>, String>> = const { OnceCell::new() };
}

/// A variable, or a secret of the same name, or `default`.
fn setting(env: &Env, name: &str, default: &str) -> String {
    env.secret(name)
        .map(|value| value.to_string())
        .or_else(|_| env.var(name).map(|value| value.to_string()))
        .unwrap_or_else(|_| default.to_owned())
}

fn number(env: &Env, name: &str, default: usize) -> Result<usize, String> {
    let text = setting(env, name, &default.to_string());
    text.trim()
        .parse()
        .map_err(|_| format!("{name} must be a whole number, not {text:?}"))
}

fn build(env: &Env) -> Result<Edge, String> {
    let private_key = env
        .secret("EDGE_PRIVATE_KEY")
        .map_err(|_| "the secret EDGE_PRIVATE_KEY is not set".to_owned())?
        .to_string();
    let jwks = |name: &str| -> Result<JwkSet, String> {
        let text = setting(env, name, r#"{"keys": []}"#);
        serde_json::from_str(&text).map_err(|e| format!("{name} is not a JWKS: {e}"))
    };
    let token_keys = KeySet::from_jwks(&jwks("CLIENT_TOKEN_JWKS")?)
        .map_err(|e| format!("CLIENT_TOKEN_JWKS: {e}"))?;
    let retired = jwks("EDGE_RETIRED_JWKS")?
        .keys
        .iter()
        .map(|jwk| PublicKey::from_x(&jwk.kid, &jwk.x))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("EDGE_RETIRED_JWKS: {e}"))?;
    let edge_id = setting(env, "EDGE_ID", "idyntra-edge");
    let settings = EdgeSettings {
        token_audience: edge_id.clone(),
        edge_id,
        token_issuer: setting(env, "TOKEN_ISSUER", "idyntra"),
        attestation_ttl_secs: number(env, "ATTESTATION_TTL_SECS", 300)? as i64,
        capture: CaptureLimits {
            max_body_bytes: number(env, "MAX_BODY_BYTES", 24 * 1024 * 1024)?,
            max_selfie_parts: number(env, "MAX_FRAMES", 40)?,
            ..CaptureLimits::default()
        },
        ..EdgeSettings::default()
    };
    let signing = EdKey::parse(&setting(env, "EDGE_KID", "edge-worker-1"), &private_key)
        .map_err(|e| format!("EDGE_PRIVATE_KEY: {e}"))?;
    let checker = Checker::bundled().map_err(|e| e.to_string())?;
    Edge::new(settings, token_keys, signing, retired, checker).map_err(|e| e.to_string())
}

fn edge(env: &Env) -> Result<Rc<Edge>, String> {
    EDGE.with(|cell| cell.get_or_init(|| build(env).map(Rc::new)).clone())
}

fn json_response(
    status: u16,
    body: &impl serde::Serialize,
    content_type: &str,
) -> worker::Result<Response> {
    let text = serde_json::to_string(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(text)?
        .with_status(status)
        .with_headers(headers))
}

fn problem(problem: &Problem) -> worker::Result<Response> {
    json_response(problem.status, problem, Problem::CONTENT_TYPE)
}

fn error_response(error: &AttestError) -> worker::Result<Response> {
    let response = problem(&error.problem())?;
    if let Some(seconds) = error.retry_after_secs() {
        response
            .headers()
            .set("retry-after", &seconds.to_string())?;
    }
    Ok(response)
}

async fn attest(mut request: Request, edge: &Edge, env: &Env) -> worker::Result<Response> {
    let limit = edge.settings().capture.max_body_bytes;
    let too_large = AttestError::Capture(CaptureError::BodyTooLarge { max: limit });
    let announced = request
        .headers()
        .get("content-length")?
        .and_then(|length| length.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return error_response(&too_large);
    }
    let Some(length) = announced else {
        // Without a length the body would be buffered whole before it could be measured.
        return problem(
            &Problem::new(411, "length_required", "Content-Length is required").with_detail(
                "Send the capture with its Content-Length (as fetch does with FormData).",
            ),
        );
    };
    let headers = request.headers();
    let authorization = headers.get("authorization")?;
    // Cloudflare sets the client's address; a request without it is local (`wrangler dev`).
    let client = headers
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "local".to_owned());
    let now = (worker::Date::now().as_millis() / 1000) as i64;
    let ledger = Ledger::bound(env, edge.settings().abuse);
    let count_failure = async |error: &AttestError| {
        if let Some(ledger) = &ledger
            && error.counts_as_failure()
        {
            ledger.record_failure(&client, now).await;
        }
    };
    let claims = match edge.precheck(authorization.as_deref(), &client, now) {
        Ok(claims) => claims,
        Err(error) => {
            count_failure(&error).await;
            return error_response(&error);
        }
    };
    if let Some(ledger) = &ledger
        && let Err(refusal) = ledger.admit(&client, &claims.sid, claims.exp, now).await
    {
        return error_response(&AttestError::Refused(refusal));
    }
    let body = request.bytes().await?;
    if body.len() > limit || body.len() != length {
        return error_response(&too_large);
    }
    let headers = request.headers();
    let content_type = headers.get("content-type")?;
    match edge.attest(AttestRequest {
        authorization: authorization.as_deref(),
        content_type: content_type.as_deref(),
        body: body.into(),
        client: &client,
        now,
    }) {
        Ok(answer) => json_response(200, &answer, "application/json"),
        Err(error) => {
            count_failure(&error).await;
            error_response(&error)
        }
    }
}

/// The CORS answer headers for `origin` when the allow-list (`ALLOWED_ORIGINS`, comma-separated)
/// names it.
fn cors(env: &Env, origin: Option<&str>, headers: &Headers) -> worker::Result<()> {
    let allowed = setting(env, "ALLOWED_ORIGINS", "");
    // Answers differ by origin, and some are cacheable (the JWKS).
    headers.set("vary", "origin")?;
    let Some(origin) = origin else {
        return Ok(());
    };
    if allowed
        .split(',')
        .map(|o| o.trim().trim_end_matches('/'))
        .any(|o| o == origin)
    {
        headers.set("access-control-allow-origin", origin)?;
        headers.set("access-control-allow-methods", "GET, POST")?;
        headers.set(
            "access-control-allow-headers",
            "authorization, content-type",
        )?;
        headers.set("access-control-expose-headers", "retry-after")?;
        headers.set("access-control-max-age", "600")?;
    }
    Ok(())
}

#[event(fetch)]
async fn fetch(request: Request, env: Env, _context: Context) -> worker::Result<Response> {
    let origin = request.headers().get("origin").ok().flatten();
    // Every answer, errors included, carries the CORS headers the browser needs to read it.
    let response = match respond(request, &env).await {
        Ok(response) => response,
        Err(error) => {
            worker::console_error!("request failed: {error}");
            problem(
                &Problem::new(400, "bad_request", "The request could not be read")
                    .with_detail("Send it again."),
            )?
        }
    };
    cors(&env, origin.as_deref(), response.headers())?;
    Ok(response)
}

async fn respond(request: Request, env: &Env) -> worker::Result<Response> {
    let route = (request.method(), request.path());
    let response = match (&route.0, route.1.as_str()) {
        (Method::Options, _) => Response::empty()?.with_status(204),
        (Method::Get, "/healthz") => json_response(
            200,
            &serde_json::json!({"status": "ok"}),
            "application/json",
        )?,
        (Method::Get, "/.well-known/jwks.json") | (Method::Post, "/v1/attest") => match edge(env) {
            Err(message) => {
                worker::console_error!("edge configuration: {message}");
                problem(&Problem::new(
                    503,
                    "not_configured",
                    "The edge is not configured",
                ))?
            }
            Ok(edge) if route.0 == Method::Post => attest(request, &edge, env).await?,
            Ok(edge) => {
                let response = json_response(200, &edge.jwks(), "application/json")?;
                response
                    .headers()
                    .set("cache-control", "public, max-age=300")?;
                response
            }
        },
        _ => problem(&Problem::new(404, "not_found", "Not found").with_detail("no such route"))?,
    };
    Ok(response)
}
