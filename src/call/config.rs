//! Per-call behaviour settings: what the agent says on its own (greeting,
//! prompts, goodbyes), timers, barge-in thresholds, DTMF keys and pacing.

use std::collections::BTreeMap;
use std::time::Duration;

/// What a key press does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfAction {
    /// Transfer to the tenant's transfer number (if it has one).
    Transfer,
    /// Say goodbye and hang up.
    Hangup,
    /// Say this text.
    Say(String),
}

/// Settings of one [`super::CallSession`]. `Default` gives sane values; the
/// driver fills the tenant's greeting, transfer number and texts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Spoken as soon as the stream starts (personalised for known callers
    /// by whoever builds the config).
    pub greeting: String,
    /// Caller silence after the agent finished before asking if they are there.
    pub silence_prompt_after: Duration,
    /// The "are you still there?" text.
    pub silence_prompt_text: String,
    /// Further silence after the prompt before saying goodbye and hanging up.
    pub silence_hangup_after: Duration,
    /// Said before hanging up on a silent line.
    pub silence_goodbye_text: String,
    /// Hard limit on the call's length.
    pub max_call_duration: Duration,
    /// How long before the limit the agent warns the caller.
    pub max_duration_warning_before: Duration,
    /// The warning.
    pub max_duration_warning_text: String,
    /// Said when the limit is reached, before hanging up.
    pub max_duration_goodbye_text: String,
    /// Caller speech must last this long over the agent to interrupt it
    /// (voice activity alone; a non-backchannel transcript interrupts at once).
    pub barge_in_min_speech: Duration,
    /// After an interruption, if no words follow within this window the
    /// interruption was false: the cut sentence is offered again.
    pub false_interruption_window: Duration,
    /// Words that acknowledge rather than interrupt ("mm-hm", "okay").
    pub backchannels: Vec<String>,
    /// Key presses and what they do.
    pub dtmf: BTreeMap<char, DtmfAction>,
    /// The tenant's human transfer number.
    pub transfer_number: Option<String>,
    /// Said before transferring.
    pub transfer_text: String,
    /// Said when a transfer is asked for but the tenant has no number.
    pub transfer_unavailable_text: String,
    /// Said before hanging up on request (DTMF or the `end_call` tool).
    pub goodbye_text: String,
    /// Said when a provider fails mid-call.
    pub apology_text: String,
    /// Agent audio kept queued at Twilio beyond what marks show as played.
    pub queue_ahead: Duration,
    /// 20 ms frames per `media` message (each followed by a mark).
    pub frames_per_message: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let mut dtmf = BTreeMap::new();
        dtmf.insert('0', DtmfAction::Transfer);
        Self {
            greeting: "Hello, thanks for calling. How can I help you today?".into(),
            silence_prompt_after: Duration::from_secs(8),
            silence_prompt_text: "Are you still there?".into(),
            silence_hangup_after: Duration::from_secs(7),
            silence_goodbye_text: "I haven't heard anything, so I'll let you go. Thanks for calling, goodbye."
                .into(),
            max_call_duration: Duration::from_secs(15 * 60),
            max_duration_warning_before: Duration::from_secs(60),
            max_duration_warning_text: "Just so you know, we have about a minute left on this call.".into(),
            max_duration_goodbye_text: "We've reached the time limit for this call. Thank you for calling, goodbye."
                .into(),
            barge_in_min_speech: Duration::from_millis(500),
            false_interruption_window: Duration::from_millis(1_500),
            backchannels: [
                "mm-hm", "mhm", "mm", "hmm", "uh-huh", "uh huh", "yeah", "yep", "yes", "okay", "ok", "right",
                "sure", "got it", "i see", "alright", "all right",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            dtmf,
            transfer_number: None,
            transfer_text: "Let me connect you with someone now. Please hold.".into(),
            transfer_unavailable_text: "I'm sorry, I can't transfer calls right now, but I'm happy to take a message."
                .into(),
            goodbye_text: "Thank you for calling. Goodbye.".into(),
            apology_text:
                "I'm sorry, I'm having trouble right now. I can take a message or connect you with someone."
                    .into(),
            queue_ahead: Duration::from_millis(300),
            frames_per_message: 5,
        }
    }
}

impl SessionConfig {
    /// Whether `text` is only an acknowledgement ("mm-hm", "okay.").
    pub fn is_backchannel(&self, text: &str) -> bool {
        let normalised: String = text
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '-')
            .collect::<String>()
            .to_lowercase();
        let normalised = normalised.split_whitespace().collect::<Vec<_>>().join(" ");
        !normalised.is_empty() && self.backchannels.contains(&normalised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backchannels_ignore_case_and_punctuation() {
        let config = SessionConfig::default();
        for yes in ["Mm-hm.", "okay", "Yeah!", "  uh-huh ", "Got it."] {
            assert!(config.is_backchannel(yes), "{yes}");
        }
        for no in ["", "wait", "okay but what about my claim", "no"] {
            assert!(!config.is_backchannel(no), "{no}");
        }
    }
}
