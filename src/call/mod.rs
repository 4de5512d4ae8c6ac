//! One call's conversation: the Twilio Media Streams protocol, the sans-IO
//! [`CallSession`] state machine and its settings, the async [`driver`]
//! that wires a session to its socket and providers, the live-call
//! [`registry`] and the [`transcript`] writer.

pub mod config;
pub mod driver;
pub mod protocol;
pub mod registry;
pub mod route;
pub mod session;
pub mod transcript;
pub mod websocket;

pub use config::{DtmfAction, SessionConfig};
pub use session::{
    CallSession, ChatMessage, EndReason, Input, Output, Speaker, TranscriptEntry, TurnTimings,
};

#[cfg(test)]
mod tests;
