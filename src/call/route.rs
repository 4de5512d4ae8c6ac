//! `GET /twilio/media`: the bidirectional Media Streams websocket. The
//! upgrade's signature is checked when present; the call token in the
//! `start` message is what admits a call (see [`super::driver`]).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;

use super::driver::UpgradeSignature;
use super::websocket::{self, MAX_WS_MESSAGE_BYTES};
use crate::http::AppState;
use crate::twilio::signature::{self, SignedPayload};

/// The media websocket's path.
pub const MEDIA_PATH: &str = "/twilio/media";

/// The route.
pub fn routes() -> Router<AppState> {
    Router::new().route(MEDIA_PATH, get(media_stream))
}

async fn media_stream(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let upgrade = match headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    {
        None => UpgradeSignature::Absent,
        Some(sig) => {
            let url = state.settings.public_url.websocket(MEDIA_PATH);
            let platform_ok = state
                .settings
                .twilio
                .auth_token
                .as_ref()
                .is_some_and(|token| {
                    signature::validate(token.expose_secret(), &url, SignedPayload::Form(&[]), sig)
                        .is_ok()
                });
            if platform_ok {
                UpgradeSignature::Verified
            } else {
                UpgradeSignature::Unverified {
                    signature: sig.to_string(),
                    url,
                }
            }
        }
    };
    let mut ctx = state.calls.clone();
    ctx.upgrade = upgrade;
    ws.max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let outcome = websocket::serve(socket, ctx).await;
            tracing::debug!(?outcome, "media stream closed");
        })
}
