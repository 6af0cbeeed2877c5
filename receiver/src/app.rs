//! Shared state of the HTTP server and its routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::auth::{Auth, RateLimiter};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{read, write};

#[derive(Debug)]
pub struct App {
    pub store: Arc<Store>,
    pub config: Config,
    pub auth: Auth,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::handle))
        .route("/api/v1/read", post(read::remote_read))
        .route("/api/v1/series", get(read::series).post(read::series))
        .route("/api/v1/labels", get(read::labels).post(read::labels))
        .route("/api/v1/label/{name}/values", get(read::label_values))
        .route("/api/v1/query", get(read::query).post(read::query))
        .route("/api/v1/query_range", get(read::query_range).post(read::query_range))
        .route("/api/v1/metadata", get(read::metadata))
        .route("/api/v1/export", get(read::export).post(read::export))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        // The body limit is enforced by the write handler itself, after the header checks.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let body = app.metrics.render(app.store.series_count(), app.store.size_on_disk());
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
