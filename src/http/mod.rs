//! The HTTP surface: health and readiness probes, the platform API and the
//! Twilio webhooks and media websocket. Later layers (memory API) mount here.

pub(crate) mod auth;
mod error;
mod health;
mod platform_api;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::call::driver::CallContext;
use crate::configuration::Settings;
use crate::platform::Platform;

/// Shared, cheaply clonable handles every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// Platform operations (and through them the database).
    pub platform: Platform,
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Set once shutdown begins: readiness fails so load balancers stop
    /// sending new calls while live ones drain.
    pub draining: Arc<AtomicBool>,
    /// What every call's driver needs (providers, live calls, token key).
    pub calls: CallContext,
}

impl AppState {
    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Builds the application's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .nest("/platform/api", platform_api::routes())
        .merge(crate::twilio::webhooks::routes())
        .merge(crate::call::route::routes())
        .merge(crate::memory::routes())
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
