//! `GET /healthz` (the process is alive), `GET /readyz` (it can serve:
//! database reachable, migrations current, not draining) and `GET /metrics`
//! (Prometheus text format).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::db::Readiness;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text exposition: per-turn latency histograms by stage and
/// provider, provider failures and fallbacks, live calls.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.calls.metrics.render(),
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    match state.platform.db().readiness().await {
        Readiness::Ready => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "ok", "migrations": "current" })),
        ),
        Readiness::MigrationsPending { missing } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not_ready", "database": "ok", "migrations": "pending",
                         "missing": missing }),
            ),
        ),
        Readiness::Unreachable(reason) => {
            tracing::warn!(%reason, "readiness: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "database": "unreachable" })),
            )
        }
    }
}
