//! The edge attestation service hosted by this binary: embedded in the API server
//! (`edge.embedded`) or alone with `idyntra edge serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::ConnectInfo;
use idyntra_edge::abuse::AbuseLimits;
use idyntra_edge::capture::CaptureLimits;
use idyntra_edge::native::{self, ClientIdentity, EdgeService};
use idyntra_edge::{Checker, Edge, EdgeSettings, KeySet, PassivePad, PublicKey};
use tokio::net::TcpListener;

use crate::abuse_ledger::RedisAbuseLedger;
use crate::app;
use crate::client_token::SigningIdentity;
use crate::config::{Config, PassivePadMode, RetiredKey};
use crate::perimeter;
use crate::redis_link::RedisLink;

fn public_keys<'a>(
    keys: impl IntoIterator<Item = &'a RetiredKey>,
) -> anyhow::Result<Vec<PublicKey>> {
    keys.into_iter()
        .map(|key| {
            PublicKey::from_x(&key.kid, &key.x).with_context(|| format!("key {:?}", key.kid))
        })
        .collect()
}

/// The edge of this configuration. `backend` is the backend's client-token key when this process
/// holds it; its public half, the retired ones and `edge.client_token_keys` are trusted.
pub fn build(config: &Config, backend: Option<&SigningIdentity>) -> anyhow::Result<Edge> {
    let edge = &config.edge;
    let mut token_keys = KeySet::default();
    let current = backend
        .map(|identity| PublicKey::from_x(&identity.kid, &identity.public_x()))
        .transpose()
        .context("signing.private_key")?;
    let retired = if backend.is_some() {
        public_keys(&config.signing.retired_keys).context("signing.retired_keys")?
    } else {
        Vec::new()
    };
    for key in current
        .into_iter()
        .chain(retired)
        .chain(public_keys(&edge.client_token_keys).context("edge.client_token_keys")?)
    {
        // A key listed in both places is trusted once.
        if token_keys.get(key.kid()).is_none() {
            token_keys.insert(key).context("edge.client_token_keys")?;
        }
    }
    let settings = EdgeSettings {
        edge_id: edge.id.clone(),
        token_issuer: config.issuer.clone(),
        token_audience: edge.id.clone(),
        attestation_ttl_secs: i64::try_from(edge.attestation_ttl.as_secs()).unwrap_or(600),
        capture: CaptureLimits {
            max_body_bytes: edge.max_body_bytes,
            max_selfie_parts: edge.max_frames,
            ..CaptureLimits::default()
        },
        abuse: AbuseLimits::default(),
    };
    let mut checker = Checker::bundled().context("loading the edge models")?;
    if edge.passive_pad != PassivePadMode::Off {
        let mut passive_pad = PassivePad::bundled(edge.passive_pad == PassivePadMode::Enforce)
            .context("loading the passive presentation-attack model")?;
        if let Some(threshold) = edge.passive_pad_threshold {
            passive_pad.threshold = threshold;
        }
        checker = checker.with_passive_pad(passive_pad);
    }
    Edge::new(
        settings,
        token_keys,
        app::edge_signing_key(config)?,
        public_keys(&edge.retired_keys).context("edge.retired_keys")?,
        checker,
    )
    .context("configuration: edge")
}

/// The edge as an HTTP service: clients named by their IP address, believing `X-Forwarded-For`
/// only from `http.trusted_proxies`. With `redis`, attempts and failures are counted across
/// replicas.
pub fn service(config: &Config, edge: Arc<Edge>, redis: Option<Arc<RedisLink>>) -> EdgeService {
    let trusted = config.http.trusted_proxies.clone();
    let identify: ClientIdentity = Arc::new(move |parts| {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        client_key(perimeter::client_ip(peer, &parts.headers, &trusted))
    });
    let concurrency = match config.edge.concurrency {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let limits = edge.settings().abuse;
    let service = EdgeService::new(edge, identify, concurrency);
    match redis {
        Some(redis) => service.with_ledger(Arc::new(RedisAbuseLedger::new(redis, limits))),
        None => service,
    }
}

/// The lockout key of a client: its IPv4 address, or the /64 of its IPv6 address (one host
/// commonly holds a whole /64 and could otherwise hop between addresses).
fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// `idyntra edge serve`: the edge alone, on `edge.listen`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let backend = app::backend_signing_identity(&config)?;
    let edge = Arc::new(build(&config, backend.as_ref())?);
    let redis = RedisLink::from_config(&config)?;
    let router = native::standalone(
        service(&config, edge, redis),
        &config.http.allowed_origins,
        config.http.request_timeout,
    );
    let listener = TcpListener::bind(config.edge.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.edge.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(address = %address, edge = %config.edge.id, "edge listening");
    println!("idyntra edge listening on http://{address}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(crate::cli::shutdown_signal())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(client_key(a), "2001:db8:1:2::/64");
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(client_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
