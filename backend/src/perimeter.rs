//! What every request passes before it reaches a route: the host allow-list, the client's IP
//! (believing `X-Forwarded-For` only from trusted proxies) and its rate limit, CORS, security
//! headers, and the rule that every error answer is problem+json.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idyntra_types::Problem;
use ipnet::IpNet;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::{App, AppState};
use crate::config::HttpConfig;
use crate::error::{ApiError, is_problem, problem_response};
use crate::rate_limit::{self, Check, CountedKeyLimit, LimitScope};

/// Probes and scrapes address the pod or host directly, so the host and IP checks skip them.
pub fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of an
/// untrusted hop could be forged by the client and are ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    // IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`; compare them as IPv4.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(&ip) {
                        return client;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// Middleware: the host allow-list, then the per-IP limit, with every error answer beneath them
/// made problem+json. One layer for the three, since each `from_fn` layer clones the whole stack
/// beneath it on every request.
pub async fn guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(refusal) = host_refusal(&app, &request) {
        return refusal;
    }
    as_problem(limit_by_ip(&app, request, next).await)
}

/// `400` for a `Host` not on the allow-list (when the list is not `*`).
fn host_refusal(app: &App, request: &Request) -> Option<Response> {
    let allowed = &app.config.http.allowed_hosts;
    if allowed.iter().any(|host| host == "*") || is_operational(request.uri().path()) {
        return None;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or_default();
    let name = strip_port(host);
    let served = allowed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name));
    (!served).then(|| {
        ApiError::bad_request("host_not_allowed", "this host name is not served here")
            .into_response()
    })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The per-IP rate limit, applied before authentication so guessing keys is limited.
/// A secret key this process verified recently has its own limit counted here as well, in the same
/// round trip to Redis; `require_api_key` takes that decision over.
async fn limit_by_ip(app: &App, mut request: Request, next: Next) -> Response {
    if !app.config.rate_limit.enabled || is_operational(request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let ip = client_ip(peer, request.headers(), &app.config.http.trusted_proxies).to_string();
    let known_key = app.recently_verified_key(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok()),
    );
    let limits = &app.config.rate_limit;
    let mut checks = vec![Check {
        scope: LimitScope::Ip,
        id: &ip,
        limit: limits.per_ip,
    }];
    if let Some(principal) = &known_key {
        checks.push(Check {
            scope: LimitScope::Key,
            id: &principal.api_key_id,
            limit: limits.per_key,
        });
    }
    let decisions = app.limiter.check_in_order(&checks).await;
    let mut decisions = decisions.into_iter();
    let Some(decision) = decisions.next() else {
        // Not reached: the first limit always gets a decision.
        return next.run(request).await;
    };
    if let (Some(principal), Some(key_decision)) = (known_key, decisions.next()) {
        request.extensions_mut().insert(CountedKeyLimit {
            principal,
            decision: key_decision,
        });
    }
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    rate_limit::add_headers(&decision, response.headers_mut());
    response
}

/// Middleware: [`as_problem`] on every answer.
pub async fn problem_errors(request: Request, next: Next) -> Response {
    as_problem(next.run(request).await)
}

/// Any error answer that is not problem+json yet (unknown methods, layer rejections, timeouts) is
/// rewritten as one, keeping its status and headers such as `Allow`.
fn as_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (code, title, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "Not found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "Method not allowed",
            "this route does not accept this method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "Payload too large",
            "the request body exceeds the configured limit",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
            "timeout",
            "Request timed out",
            "the request took longer than the configured limit",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "Service unavailable",
            "the request could not be completed in time; retry later",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as application/json",
        ),
        status if status.is_server_error() => (
            "internal_error",
            "Internal server error",
            "the request failed on the server",
        ),
        _ => ("bad_request", "Bad request", "the request is not valid"),
    };
    let (mut parts, _) = response.into_parts();
    let problem = problem_response(Problem::new(status.as_u16(), code, title).with_detail(detail));
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        problem_parts.headers[header::CONTENT_TYPE].clone(),
    );
    Response::from_parts(parts, Body::new(body))
}

/// Middleware: the [`security_headers`] on every answer, each unless a route set its own. One
/// layer for all of them, since every layer costs each request a little.
pub async fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in security_headers() {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    response
}

/// Headers every answer carries unless a route set its own (the docs page sets its own CSP).
pub fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains; preload"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ),
    ]
}

/// CORS from the allow-list; `*` (dev only, refused elsewhere by config validation) allows any.
pub fn cors(config: &HttpConfig) -> CorsLayer {
    let origins = if config.allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let forged = headers(&["1.2.3.4, 203.0.113.9"]);
        // From an untrusted peer, the header is ignored entirely.
        let outsider: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(outsider, &forged, &trusted), outsider);
        // From a trusted proxy, the right-most untrusted hop is the client; the forged left part
        // is not believed.
        assert_eq!(
            client_ip(proxy, &forged, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Chains of trusted proxies are walked through.
        let chained = headers(&["203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            client_ip(proxy, &chained, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(client_ip(proxy, &headers(&["nonsense"]), &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("api.example.com:443"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
    }
}
