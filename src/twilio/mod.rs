//! The Twilio HTTP edge: request signatures, TwiML, call tokens, and the
//! voice and status webhooks. The media websocket lives in the `call` module.

pub mod call_status;
pub mod call_token;
pub mod request;
pub mod rest;
pub mod signature;
pub mod twiml;
pub mod webhooks;

pub use call_token::{CallClaims, CallTokenError, CallTokenKey};
pub use webhooks::WebhookError;
