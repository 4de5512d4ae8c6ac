//! Adapts an axum websocket to the driver's [`WsIn`]/[`WsOut`] frames and
//! runs the call on it. Pings are answered by axum; a close frame or a
//! transport error ends the incoming stream.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::driver::{self, CallContext, StreamOutcome, WsIn, WsOut};

/// Largest websocket message accepted from Twilio (a 20 ms media message is
/// ~300 bytes; anything near this is abuse and closes the socket).
pub const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;

/// Runs one Twilio media stream over `socket` until it ends.
pub async fn serve(socket: WebSocket, ctx: CallContext) -> StreamOutcome {
    let (mut sink, stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WsOut>(512);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let result = match frame {
                WsOut::Text(text) => sink.send(Message::Text(text.into())).await,
                WsOut::Close(code, reason) => {
                    let close = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let incoming = futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            match stream.next().await? {
                Ok(Message::Text(text)) => return Some((WsIn::Text(text.to_string()), stream)),
                Ok(Message::Binary(bytes)) => return Some((WsIn::Binary(bytes.len()), stream)),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
            }
        }
    });
    let (outcome, dropped) = driver::run(Box::pin(incoming), out_tx, ctx).await;
    if dropped != driver::Dropped::default() {
        tracing::warn!(?dropped, "media stream input dropped");
    }
    let _ = writer.await;
    outcome
}
