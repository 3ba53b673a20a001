//! Webhook signing and delivery.
//!
//! Every delivery carries `Idyntra-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! (the endpoint's secret, shown once at creation) and
//! `Idyntra-Signature-Ed25519: t=<unix>,kid=<kid>,sig=<base64url Ed25519("<t>.<body>")>`, verifiable
//! with the key of that `kid` in the backend's `/.well-known/jwks.json`. A delivery that is not
//! answered `2xx` is retried with exponential backoff and full jitter until `webhooks.retry_for`
//! after the event.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use regex::Regex;
use sha2::Sha256;

use crate::client_token::SigningIdentity;
use crate::config::WebhookConfig;
use crate::store::{DeliveryAttempt, DeliveryRecord};

pub const SIGNATURE_HEADER: &str = "Idyntra-Signature";
pub const ED25519_HEADER: &str = "Idyntra-Signature-Ed25519";

/// A new endpoint signing secret.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    format!("whsec_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The `Idyntra-Signature` value of `body` sent at `t` (Unix seconds).
pub fn hmac_signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `Idyntra-Signature-Ed25519` value of `body` sent at `t`.
pub fn ed25519_signature(identity: &SigningIdentity, t: i64, body: &[u8]) -> String {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let signature = identity.sign(&message);
    format!(
        "t={t},kid={},sig={}",
        identity.kid,
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The receiver URLs accepted: `http(s)://`, then an IPv4 address or a host name whose labels are
/// letters, digits and inner hyphens and whose last label starts with a letter (a numeric one would
/// be read as an address), an optional port and path. No credentials, no IPv6 literals, no
/// characters a URL parser would silently rewrite. The API's schema states the same pattern.
pub const RECEIVER_URL_PATTERN: &str = concat!(
    r"^https?://",
    r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    r"|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    r"(/[!-~]*)?$",
);

/// Why an endpoint URL is refused.
pub fn check_url(
    url: &str,
    config: &WebhookConfig,
    https_only: bool,
) -> Result<reqwest::Url, String> {
    static RECEIVER_URL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(RECEIVER_URL_PATTERN).unwrap_or_else(|_| unreachable!()));
    if !RECEIVER_URL.is_match(url) {
        return Err(
            "must be http(s)://host[:port][/path] with a host name or an IPv4 address".to_owned(),
        );
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if !https_only => {}
        _ => return Err("must be an https:// URL".to_owned()),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".to_owned());
    }
    if let Some(ip) = parsed
        .host_str()
        .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        && is_private(ip)
        && !config.allow_private_targets
    {
        return Err("must not point at a private or loopback address".to_owned());
    }
    Ok(parsed)
}

/// Loopback, private, link-local and other internal addresses: never a customer's receiver
/// unless `webhooks.allow_private_targets` says so (a request forgery guard).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Delay before retry number `attempt` (1 for the first retry): doubling from
/// `initial_backoff` up to `max_backoff`, drawn uniformly from its upper half so receivers that
/// failed together are not retried together.
pub fn backoff(config: &WebhookConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = config
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(config.max_backoff);
    let low = ceiling / 2;
    low + ceiling.mul_f64(rand::thread_rng().r#gen::<f64>() * 0.5)
}

/// Sends `delivery` to `url` and says what happened, with the next attempt when one is due.
pub async fn deliver(
    client: &reqwest::Client,
    config: &WebhookConfig,
    identity: &SigningIdentity,
    url: &str,
    secret: &[u8],
    delivery: &DeliveryRecord,
    now_ms: i64,
) -> DeliveryAttempt {
    let outcome = send(client, config, identity, url, secret, delivery, now_ms).await;
    let (status_code, error) = match outcome {
        Ok(code) if (200..300).contains(&code) => {
            return DeliveryAttempt {
                status: "delivered",
                next_attempt_at: None,
                status_code: Some(i32::from(code)),
                error: None,
                delivered_at: Some(now_ms),
            };
        }
        Ok(code) => (
            Some(i32::from(code)),
            format!("the receiver answered {code}"),
        ),
        Err(error) => (None, error),
    };
    let attempt = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
    let next = now_ms + crate::clock::ms(backoff(config, attempt));
    let give_up_at = delivery.created_at + crate::clock::ms(config.retry_for);
    DeliveryAttempt {
        status: if next > give_up_at {
            "failed"
        } else {
            "pending"
        },
        next_attempt_at: (next <= give_up_at).then_some(next),
        status_code,
        error: Some(error),
        delivered_at: None,
    }
}

async fn send(
    client: &reqwest::Client,
    config: &WebhookConfig,
    identity: &SigningIdentity,
    url: &str,
    secret: &[u8],
    delivery: &DeliveryRecord,
    now_ms: i64,
) -> Result<u16, String> {
    // Addresses are checked here; names by the client's resolver (see `delivery_client`).
    let parsed = check_url(url, config, false)?;
    let t = crate::clock::to_secs(now_ms);
    let body = delivery.payload.as_bytes();
    let response = client
        .post(parsed)
        .timeout(config.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, hmac_signature(secret, t, body))
        .header(ED25519_HEADER, ed25519_signature(identity, t, body))
        .header("Idyntra-Event-Id", &delivery.event_id)
        .header("Idyntra-Delivery-Id", &delivery.webhook_delivery_id)
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(response.status().as_u16())
}

/// The HTTP client of webhook deliveries: redirects are not followed (a receiver could redirect to
/// an internal address), and unless `webhooks.allow_private_targets` is set, host names are resolved
/// by [`PublicAddressesOnly`].
pub fn delivery_client(config: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if !config.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(PublicAddressesOnly));
    }
    builder.build()
}

/// Resolves a receiver's host name and refuses it when any of its addresses is private. The
/// connection then uses exactly the addresses checked here: a name cannot be pointed somewhere
/// else between the check and the connection (DNS rebinding).
#[derive(Debug)]
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            if let Some(private) = addresses.iter().find(|a| is_private(a.ip())) {
                return Err(
                    format!("{host} resolves to a private address ({})", private.ip()).into(),
                );
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hmac_signature_is_stripe_shaped_and_covers_time_and_body() {
        let signature = hmac_signature(b"whsec_test", 1_700_000_000, b"{\"a\":1}");
        let (t, v1) = signature.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        assert_eq!(v1.len(), 3 + 64);
        assert_ne!(
            signature,
            hmac_signature(b"whsec_test", 1_700_000_001, b"{\"a\":1}")
        );
        assert_ne!(
            signature,
            hmac_signature(b"whsec_test", 1_700_000_000, b"{\"a\":2}")
        );
        assert_ne!(
            signature,
            hmac_signature(b"whsec_other", 1_700_000_000, b"{\"a\":1}")
        );
    }

    #[test]
    fn the_ed25519_signature_verifies_with_the_published_key() {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let identity = SigningIdentity::generate("backend-1");
        let header = ed25519_signature(&identity, 42, b"body");
        let sig = header.split("sig=").nth(1).unwrap();
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let x: [u8; 32] = URL_SAFE_NO_PAD
            .decode(identity.public_x())
            .unwrap()
            .try_into()
            .unwrap();
        let key = VerifyingKey::from_bytes(&x).unwrap();
        assert!(key.verify(b"42.body", &signature).is_ok());
        assert!(key.verify(b"43.body", &signature).is_err());
        assert!(header.starts_with("t=42,kid=backend-1,sig="));
    }

    #[tokio::test]
    async fn deliveries_never_connect_to_a_name_that_resolves_privately() {
        let guarded = delivery_client(&WebhookConfig {
            allow_private_targets: false,
            ..WebhookConfig::default()
        })
        .unwrap();
        // Nothing listens on the port: an attempt to connect would fail differently.
        let error = guarded.get("http://localhost:9/").send().await.unwrap_err();
        let chain = error_chain(&error);
        assert!(
            chain.contains("localhost resolves to a private address"),
            "{chain}"
        );
        let open = delivery_client(&WebhookConfig {
            allow_private_targets: true,
            ..WebhookConfig::default()
        })
        .unwrap();
        let error = open.get("http://localhost:9/").send().await.unwrap_err();
        assert!(!error_chain(&error).contains("private address"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let config = WebhookConfig {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            ..WebhookConfig::default()
        };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!((Duration::from_secs(5)..=Duration::from_secs(10)).contains(&first));
            let third = backoff(&config, 3);
            assert!((Duration::from_secs(20)..=Duration::from_secs(40)).contains(&third));
            let capped = backoff(&config, 30);
            assert!((Duration::from_secs(30)..=Duration::from_secs(60)).contains(&capped));
        }
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        let strict = WebhookConfig::default();
        for url in [
            "http://127.0.0.1/hook",
            "https://10.0.0.8/hook",
            "https://[::1]/hook",
            "https://169.254.169.254/latest",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
        ] {
            assert!(check_url(url, &strict, false).is_err(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/idyntra", &strict, true).is_ok());
        assert!(check_url("http://hooks.example.com/idyntra", &strict, true).is_err());
        let open = WebhookConfig {
            allow_private_targets: true,
            ..strict
        };
        assert!(check_url("http://127.0.0.1:9/hook", &open, false).is_ok());
    }

    #[test]
    fn receivers_are_plain_host_names_or_ipv4_addresses() {
        let open = WebhookConfig {
            allow_private_targets: true,
            ..WebhookConfig::default()
        };
        for url in [
            "https://hooks.example.com:8443/a/b?c=d#e",
            "https://a-b.c1/",
            "http://1.2.3.4",
            "http://localhost:65535",
        ] {
            assert!(check_url(url, &open, false).is_ok(), "{url}");
        }
        // Each of these a URL parser would take, rewritten or reread.
        for url in [
            "http://250.250.250.250*",
            "https://1.2.3.4.5/",
            "https://010.0.0.1/",
            "https://a..b/",
            "https://-a.com/",
            "https://example.123/",
            "https://x:65536/",
            "https://[::1]/",
            "https://exämple.com/",
            "https://example.com\\evil",
            " https://example.com/",
        ] {
            assert!(check_url(url, &open, false).is_err(), "{url}");
        }
    }
}
