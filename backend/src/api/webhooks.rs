//! `/v1/webhook_endpoints`: where an account's events are delivered, and what was delivered.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use idyntra_types::{Page, Problem};
use serde::{Deserialize, Serialize};

use super::extract::ApiJson;
use crate::api_keys::SCOPE_WEBHOOKS;
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::config::Profile;
use crate::error::ApiError;
use crate::events::EVENT_TYPES;
use crate::ids;
use crate::store::{DeliveryRecord, WebhookEndpointRecord};
use crate::webhooks;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook_endpoints", get(list).post(create))
        .route("/v1/webhook_endpoints/{id}", get(retrieve).delete(delete))
        .route("/v1/webhook_endpoints/{id}/deliveries", get(deliveries))
}

/// What the signing secret of an endpoint is sealed for.
pub fn secret_context(endpoint_id: &str) -> String {
    format!("webhook secret {endpoint_id}")
}

/// (`Default` is the empty body, refused for its missing `url`.)
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// The receiver: `https://` (plain `http://` only outside `prod`), a host name or an IPv4
    /// address, no credentials; private and loopback addresses are refused unless
    /// `webhooks.allow_private_targets` allows them.
    // `webhooks::RECEIVER_URL_PATTERN`, which the server checks (the attribute takes a literal).
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^https?://((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[!-~]*)?$"
    )]
    pub url: String,
    /// Event types to deliver; all of them when absent.
    #[schema(schema_with = event_types_schema)]
    pub events: Option<Vec<String>>,
}

fn event_types_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(EVENT_TYPES)),
        )
        .min_items(Some(1))
        .build()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpoint {
    pub id: String,
    pub object: &'static str,
    pub url: String,
    pub events: Vec<String>,
    pub created: i64,
    /// The signing secret of `Idyntra-Signature`: in the answer to the creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    pub id: String,
    pub object: &'static str,
    pub event_id: String,
    pub event_type: String,
    /// `pending` (to be retried), `delivered` or `failed` (retries exhausted).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created: i64,
    pub delivered_at: Option<i64>,
}

fn endpoint_view(record: &WebhookEndpointRecord, secret: Option<String>) -> WebhookEndpoint {
    WebhookEndpoint {
        id: record.webhook_endpoint_id.clone(),
        object: "webhook_endpoint",
        url: record.url.clone(),
        events: record.events.split(' ').map(str::to_owned).collect(),
        created: clock::to_secs(record.created_at),
        secret,
    }
}

fn delivery_view(record: &DeliveryRecord) -> WebhookDelivery {
    WebhookDelivery {
        id: record.webhook_delivery_id.clone(),
        object: "webhook_delivery",
        event_id: record.event_id.clone(),
        event_type: record.event_type.clone(),
        status: record.status.clone(),
        attempts: record.attempts,
        next_attempt_at: record.next_attempt_at.map(clock::to_secs),
        last_status_code: record.last_status_code,
        last_error: record.last_error.clone(),
        created: clock::to_secs(record.created_at),
        delivered_at: record.delivered_at.map(clock::to_secs),
    }
}

/// Add a webhook endpoint; the answer shows its signing secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    request_body = CreateWebhookEndpoint,
    responses(
        (status = 201, description = "Endpoint created; `secret` is shown only here", body = WebhookEndpoint),
        (status = 422, description = "Invalid URL or event type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<CreateWebhookEndpoint>,
) -> Result<Response, ApiError> {
    principal.require(SCOPE_WEBHOOKS)?;
    let https_only = app.config.profile == Profile::Prod;
    webhooks::check_url(&request.url, &app.config.webhooks, https_only)
        .map_err(|message| ApiError::field("/url", message))?;
    if request.url.len() > 2048 {
        return Err(ApiError::field("/url", "at most 2048 characters"));
    }
    let events = match request.events {
        None => EVENT_TYPES.iter().map(|e| (*e).to_owned()).collect(),
        Some(events) if events.is_empty() => {
            return Err(ApiError::field("/events", "name at least one event type"));
        }
        Some(events) => {
            if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
                return Err(ApiError::field(
                    "/events",
                    format!(
                        "unknown event type {unknown:?}; known: {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
            let mut events = events;
            events.sort();
            events.dedup();
            events
        }
    };
    let id = ids::new_id("whe");
    let secret = webhooks::new_secret();
    let (master_kid, sealed_secret) = app
        .vault
        .seal_secret(&secret_context(&id), secret.as_bytes())
        .map_err(anyhow::Error::from)?;
    let record = WebhookEndpointRecord {
        webhook_endpoint_id: id.clone(),
        account_id: principal.account_id.clone(),
        url: request.url,
        events: events.join(" "),
        master_kid,
        sealed_secret,
        created_at: clock::now_ms(),
        deleted_at: None,
    };
    let audit = principal.audit(
        "webhook_endpoint.created",
        &id,
        serde_json::json!({ "url": record.url, "events": events }),
    );
    app.store.insert_webhook_endpoint(&record, &audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(endpoint_view(&record, Some(secret))),
    )
        .into_response())
}

/// List the account's webhook endpoints.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    responses((status = 200, description = "Every live endpoint", body = Page<WebhookEndpoint>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<Json<Page<WebhookEndpoint>>, ApiError> {
    principal.require(SCOPE_WEBHOOKS)?;
    let records = app.store.webhook_endpoints(&principal.account_id).await?;
    let data = records.iter().map(|r| endpoint_view(r, None)).collect();
    Ok(Json(Page::new(data, false)))
}

async fn find(
    app: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<WebhookEndpointRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("no webhook endpoint {id}"));
    if !ids::is_well_formed(id, "whe") {
        return Err(not_found());
    }
    app.store
        .get_webhook_endpoint(&principal.account_id, id)
        .await?
        .filter(|record| record.deleted_at.is_none())
        .ok_or_else(not_found)
}

/// Retrieve a webhook endpoint (without its secret).
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whe_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpoint),
        (status = 404, description = "No such endpoint for this account", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn retrieve(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    principal.require(SCOPE_WEBHOOKS)?;
    Ok(Json(endpoint_view(
        &find(&app, &principal, &id).await?,
        None,
    )))
}

/// Delete a webhook endpoint: nothing more is delivered to it; its deliveries stay readable.
#[utoipa::path(
    delete,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whe_…`)")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 404, description = "No such endpoint for this account", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(SCOPE_WEBHOOKS)?;
    find(&app, &principal, &id).await?;
    let audit = principal.audit("webhook_endpoint.deleted", &id, serde_json::json!({}));
    if !app
        .store
        .delete_webhook_endpoint(&principal.account_id, &id, clock::now_ms(), &audit)
        .await?
    {
        return Err(ApiError::not_found(format!("no webhook endpoint {id}")));
    }
    Ok(Json(
        serde_json::json!({ "id": id, "object": "webhook_endpoint", "deleted": true }),
    ))
}

/// The latest 100 deliveries to an endpoint, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whe_…`)")),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Page<WebhookDelivery>),
        (status = 404, description = "No such endpoint for this account", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn deliveries(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Page<WebhookDelivery>>, ApiError> {
    principal.require(SCOPE_WEBHOOKS)?;
    if !ids::is_well_formed(&id, "whe") {
        return Err(ApiError::not_found(format!("no webhook endpoint {id}")));
    }
    // Deleted endpoints' deliveries stay readable.
    app.store
        .get_webhook_endpoint(&principal.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook endpoint {id}")))?;
    let records = app
        .store
        .deliveries(&principal.account_id, &id, 101)
        .await?;
    let has_more = records.len() > 100;
    let data = records.iter().take(100).map(delivery_view).collect();
    Ok(Json(Page::new(data, has_more)))
}
