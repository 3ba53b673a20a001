//! The HTTP ceiling for the API benchmark: an axum handler that does nothing but answer a small
//! JSON body, on the same runtime the backend uses. `bare-axum ADDR` (default 127.0.0.1:8090).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare-axum listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await
}
