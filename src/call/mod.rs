//! One call's conversation: the Twilio Media Streams protocol, the sans-IO
//! [`CallSession`] state machine and its settings. The async driver that
//! wires sessions to sockets and providers builds on these.

pub mod config;
pub mod protocol;
pub mod session;

pub use config::{DtmfAction, SessionConfig};
pub use session::{
    CallSession, ChatMessage, EndReason, Input, Output, Speaker, TranscriptEntry, TurnTimings,
};

#[cfg(test)]
mod tests;
