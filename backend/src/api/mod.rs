//! The HTTP API: routes and the layers every request passes.

mod contract;
mod decisions;
mod demo;
mod extract;
mod health;
mod media;
pub mod sessions;
pub mod webhooks;

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use self::contract::CommonAnswers;
use crate::app::AppState;
use crate::error::ApiError;
use crate::{auth, idempotency, perimeter, request_id, telemetry};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Idyntra API",
        description = "Identity verification: sessions, liveness and face match, signed decisions.",
    ),
    paths(
        sessions::create,
        sessions::retrieve,
        sessions::list,
        sessions::cancel,
        decisions::finalize_session,
        decisions::redact,
        media::upload,
        webhooks::create,
        webhooks::list,
        webhooks::retrieve,
        webhooks::delete,
        webhooks::deliveries,
        health::healthz,
        health::readyz,
        health::metrics,
        health::jwks,
    ),
    components(schemas(
        idyntra_types::Session,
        idyntra_types::SessionStatus,
        idyntra_types::SessionOptions,
        idyntra_types::LivenessMode,
        idyntra_types::CreateSessionRequest,
        idyntra_types::Problem,
        idyntra_types::FieldError,
        idyntra_types::VerificationResult,
        media::MediaAccepted,
        webhooks::CreateWebhookEndpoint,
        webhooks::WebhookEndpoint,
        webhooks::WebhookDelivery,
    )),
    modifiers(&SecretKeyAuth, &CommonAnswers),
    tags(
        (name = "sessions", description = "Verification sessions (secret API key)"),
        (name = "capture", description = "The browser's upload of an attested capture (client token)"),
        (name = "webhooks", description = "Webhook endpoints and their deliveries (secret API key)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct SecretKeyAuth;

impl Modify for SecretKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("idk_…")
                    .description(Some("Secret API key, from `idyntra keys create`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "client_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The session's client token, from `POST /v1/sessions`"))
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A reference page rendered in the browser from `/openapi.json`.
async fn docs_page() -> Response {
    let mut response = Html(include_str!("docs.html")).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src https://cdn.jsdelivr.net; \
             style-src 'unsafe-inline' https://fonts.googleapis.com; \
             font-src https://fonts.gstatic.com; img-src data: https:; \
             connect-src 'self'; worker-src blob:; frame-ancestors 'none'",
        ),
    );
    response
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// The whole application, without a socket (tests call it with `oneshot`): the perimeter around
/// the router.
pub fn router(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let config = &state.config;
    let v1 = sessions::router()
        .merge(decisions::router())
        .merge(webhooks::router())
        // Added last runs first: authenticate, then the idempotency check sees the account.
        .route_layer(from_fn_with_state(state.clone(), idempotency::middleware))
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
    let mut router = Router::new()
        .merge(v1)
        .merge(media::router())
        .merge(health::router());
    // The embedded edge: `POST /v1/attest` behind the same perimeter (CORS, limits, timeouts).
    if let Some(edge) = &state.edge {
        let service = crate::edge_host::service(config, edge.clone(), state.redis.clone());
        let attest =
            idyntra_edge::native::attest_route(service).layer(from_fn(request_id::stamp_problems));
        router = router.route_service("/v1/attest", attest);
    }
    // The demo onboarding page: a development aid, never part of a production server.
    if config.profile == crate::config::Profile::Dev && config.demo.enabled {
        router = router.merge(demo::router(&state));
    }
    let routes = router
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .fallback(no_route)
        .layer(telemetry::RouteTemplateLayer)
        .with_state(state.clone());
    // The perimeter wraps the router once. Layered onto the routes (`Router::layer`), the whole
    // stack was a route's service, cloned for every request with its CORS lists. The first listed
    // is the outermost.
    ServiceBuilder::new()
        .layer(from_fn_with_state(
            state.metrics.clone(),
            telemetry::observe,
        ))
        .layer(map_response(perimeter::add_security_headers))
        .layer(perimeter::cors(&config.http))
        .layer(from_fn_with_state(state.clone(), perimeter::guard))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.http.request_timeout,
        ))
        // A bug must not take the connection down with it: answer a bare 500, logged.
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(axum::extract::DefaultBodyLimit::max(
            config.http.max_body_bytes,
        ))
        .service(routes)
}

/// A worker's router: the operations endpoints only, with the same request ids, metrics and
/// timeout as the API's.
pub fn operations_router(state: AppState) -> Router {
    let perimeter = ServiceBuilder::new()
        .layer(from_fn_with_state(
            state.metrics.clone(),
            telemetry::observe,
        ))
        .layer(from_fn(perimeter::problem_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config.http.request_timeout,
        ));
    Router::new()
        .merge(health::router())
        .fallback(no_route)
        .layer(telemetry::RouteTemplateLayer)
        .layer(perimeter)
        .with_state(state)
}

#[cfg(test)]
mod tests;
