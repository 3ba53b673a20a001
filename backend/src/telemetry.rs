//! Logs and metrics.
//!
//! Logs are JSON lines (`tracing`), one per request with its id, method, route template, status,
//! latency and account — never keys, tokens, images or personal data. Metrics are Prometheus text
//! from a registry owned by the app (not a global), so tests can run several apps in one process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writer running; dropping it writes out what is still buffered.
#[must_use = "logs are written until the guard is dropped"]
#[derive(Debug)]
pub struct LogGuard(#[allow(dead_code)] crate::log_writer::WriterGuard);

/// Starts logging to stderr. Safe to call twice (the second call does nothing).
///
/// Lines go to stderr in batches from a thread of their own (see [`crate::log_writer`]), so a
/// request never waits on a `write` to the log. No line is dropped; when stderr cannot keep up,
/// logging waits.
pub fn init_logging(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = crate::log_writer::spawn("idyntra-log", std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match config.format {
        LogFormat::Json => builder
            .fmt_fields(crate::log_format::SpanFields)
            .event_format(crate::log_format::JsonLine)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    LogGuard(guard)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub state: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric the backend exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_duration: HistogramFamily,
    pub rate_limit_rejections: Family<ScopeLabels, Counter>,
    pub rate_limit_fallback: Counter,
    pub db_connections: Family<PoolLabels, Gauge>,
    pub redis_up: Gauge,
    pub webhook_attempts: Family<OutcomeLabels, Counter>,
    pub decisions: Family<OutcomeLabels, Counter>,
    pub jobs_due: Family<KindLabels, Gauge>,
    pub inference_in_flight: Gauge,
    pub inference_breaker_open: Gauge,
    pub inference_batch_crops: Histogram,
}

/// The kind of a job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The outcome of a webhook attempt or a decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Buckets of the crops in one embedding run: 2, 4, … 256.
pub fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(2.0, 2.0, 8))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(batch_histogram())
    }
}

impl Metrics {
    /// The metrics, with the face engine's histogram of embedding batch sizes, which the engine
    /// records into.
    pub fn new(inference_batch_crops: Histogram) -> Self {
        let mut registry = Registry::with_prefix("idyntra");
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method, route template and status",
            http_duration.clone(),
        );
        let rate_limit_rejections = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limit_rejections",
            "Requests refused with 429, by limit (key or ip)",
            rate_limit_rejections.clone(),
        );
        let rate_limit_fallback = Counter::default();
        registry.register(
            "rate_limit_redis_fallback",
            "Rate-limit checks decided in-process because Redis was unavailable",
            rate_limit_fallback.clone(),
        );
        let db_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections, by state (idle or in_use)",
            db_connections.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 when the last Redis operation succeeded, 0 when Redis is unavailable or not configured",
            redis_up.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, pending: to be retried, failed)",
            webhook_attempts.clone(),
        );
        let decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Sessions decided, by decision",
            decisions.clone(),
        );
        let jobs_due = Family::<KindLabels, Gauge>::default();
        registry.register(
            "jobs_due",
            "Jobs whose time has come and that no runner holds, by kind (finalize, event, webhook)",
            jobs_due.clone(),
        );
        let inference_in_flight = Gauge::default();
        registry.register(
            "inference_in_flight",
            "Model runs admitted and not finished (running or queued) in this process",
            inference_in_flight.clone(),
        );
        let inference_breaker_open = Gauge::default();
        registry.register(
            "inference_breaker_open",
            "1 while the models' circuit breaker refuses work in this process",
            inference_breaker_open.clone(),
        );
        registry.register(
            "inference_batch_crops",
            "Face crops embedded per model run (dynamic batches of concurrent finalizes)",
            inference_batch_crops.clone(),
        );
        Self {
            registry,
            webhook_attempts,
            decisions,
            jobs_due,
            inference_in_flight,
            inference_breaker_open,
            inference_batch_crops,
            http_requests,
            http_duration,
            rate_limit_rejections,
            rate_limit_fallback,
            db_connections,
            redis_up,
        }
    }
}

impl Metrics {
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Middleware, the outermost: fixes the request id ([`crate::request_id`]), then one log line and
/// one metric sample per request, and the id echoed on the answer. One layer for both, since each
/// `from_fn` layer clones the whole stack beneath it on every request. It runs before routing, so
/// the route template reaches it on the answer, from [`RouteTemplate`].
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let (id, id_header) = crate::request_id::assign(&mut request);
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = id.as_str(),
        method = %method,
        route = tracing::field::Empty,
        account_id = tracing::field::Empty,
    );
    let mut response =
        crate::request_id::within(id, next.run(request).instrument(span.clone())).await;
    response
        .headers_mut()
        .insert(crate::request_id::HEADER.clone(), id_header);
    let route = match response.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => {
            span.record("route", UNMATCHED);
            UNMATCHED.to_owned()
        }
    };
    let status = response.status().as_u16();
    let latency = started.elapsed();
    let labels = RouteLabels {
        method,
        route,
        status,
    };
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(latency.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request answered"
        );
    });
    response
}

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Applied to every route with `Router::layer`: the matched route's template, recorded on the
/// request's span (so every line logged while handling it names the route) and carried out on
/// the answer to [`observe`]. Only this layer is per route, since axum clones a route's whole
/// stack of layers for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteTemplateLayer;

impl<S> Layer<S> for RouteTemplateLayer {
    type Service = RouteTemplate<S>;

    fn layer(&self, inner: S) -> RouteTemplate<S> {
        RouteTemplate { inner }
    }
}

/// See [`RouteTemplateLayer`].
#[derive(Debug, Clone)]
pub struct RouteTemplate<S> {
    inner: S,
}

impl<S> Service<Request> for RouteTemplate<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = WithRouteTemplate<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        if let Some(route) = &route {
            tracing::Span::current().record("route", route.as_str());
        }
        WithRouteTemplate {
            answer: self.inner.call(request),
            route,
        }
    }
}

pin_project! {
    /// A route's answer, with its template put on it once ready.
    pub struct WithRouteTemplate<F> {
        #[pin]
        answer: F,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for WithRouteTemplate<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.answer.poll(cx))?;
        if let Some(route) = this.route.take() {
            response.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(response))
    }
}
