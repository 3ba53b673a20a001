//! The demo onboarding page, `/demo`, served in the `dev` profile only: it shows an integrating
//! developer the whole flow on their own machine. The page never sees a secret key: its sessions
//! are created and finalized by the routes below, on the server, for the `demo.account` account,
//! the way a customer's own backend would do it with its key.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, get_service, post};
use axum::{Json, Router};
use idyntra_types::{CreateSessionRequest, LivenessMode, SessionOptions};
use serde_json::json;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use super::decisions::decide_within_deadline;
use super::sessions::{find, open, view};
use crate::app::AppState;
use crate::clock;
use crate::error::ApiError;
use crate::finalize::Requester;
use crate::ids;
use crate::store::{Account, AuditEvent};

const PAGE: &str = include_str!("../../../browser-sdk/demo/index.html");
const SCRIPT: &str = include_str!("../../../browser-sdk/demo/demo.js");
const STYLE: &str = include_str!("../../../browser-sdk/demo/demo.css");
/// The page runs only its own scripts and the SDK's wasm, talks only to this server, and takes
/// the camera's stream as media.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const ACTOR: &str = "demo";

pub fn router(state: &AppState) -> Router<AppState> {
    let sdk = ServeDir::new(&state.config.demo.sdk_dir);
    Router::new()
        .route("/demo", get(page))
        .route("/demo/", get(page))
        .route(
            "/demo/demo.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/demo/demo.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .nest_service(
            "/demo/sdk",
            get_service(sdk).layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            )),
        )
        .route("/demo/session", post(create_session))
        .route("/demo/session/{id}", get(session))
        .route("/demo/session/{id}/finalize", post(finalize))
}

async fn page(State(app): State<AppState>) -> Response {
    let built = app.config.demo.sdk_dir.join("idyntra.js").is_file();
    let body = if built {
        PAGE.to_owned()
    } else {
        // Without the SDK the page would fail in the console; say what to do instead.
        PAGE.replace(
            "<!-- sdk-missing -->",
            &format!(
                "<p class=\"missing\">The browser SDK is not built in <code>{}</code>: run \
                 <code>npm ci &amp;&amp; npm run build</code> in <code>browser-sdk/</code>, \
                 or set <code>demo.sdk_dir</code>.</p>",
                html_escape(&app.config.demo.sdk_dir.display().to_string())
            ),
        )
    };
    let mut response = Html(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The demo account's id, creating the account on first use.
async fn demo_account(app: &AppState) -> Result<String, ApiError> {
    let name = &app.config.demo.account;
    if let Some(account) = app.store.find_account(name).await? {
        return Ok(account.account_id);
    }
    let account = Account {
        account_id: ids::new_id("acct"),
        name: name.clone(),
        created_at: clock::now_ms(),
    };
    let audit = AuditEvent {
        at: account.created_at,
        actor: ACTOR.to_owned(),
        action: "account.created".to_owned(),
        target: account.account_id.clone(),
        request_id: crate::request_id::current(),
        details: json!({ "name": name }),
    };
    match app.store.insert_account(&account, &audit).await {
        Ok(()) => Ok(account.account_id),
        // Two first visits at once: the other one created it.
        Err(error) => match app.store.find_account(name).await? {
            Some(account) => Ok(account.account_id),
            None => Err(error.into()),
        },
    }
}

/// What the page needs to run the SDK: the session id and its client token (the API's session
/// object, as the customer's server would pass it on).
async fn create_session(State(app): State<AppState>) -> Result<Response, ApiError> {
    let account = demo_account(&app).await?;
    let request = CreateSessionRequest {
        reference: Some("demo".to_owned()),
        metadata: None,
        options: Some(SessionOptions {
            require_document: true,
            liveness: LivenessMode::Active,
        }),
    };
    let session = open(&app, &account, ACTOR, request).await?;
    Ok(Json(session).into_response())
}

async fn session(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account = demo_account(&app).await?;
    let session = find(&app, &account, &id).await?;
    Ok(Json(view(&session, clock::now_ms())).into_response())
}

/// Finalizes a demo session, as the customer's server does once the SDK reports `submitted`.
async fn finalize(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account = demo_account(&app).await?;
    if !ids::is_well_formed(&id, "ses") {
        return Err(ApiError::not_found(format!("no session {id}")));
    }
    let requester = Requester {
        actor: ACTOR.to_owned(),
        request_id: crate::request_id::current(),
    };
    decide_within_deadline(app, account, id, requester).await
}
