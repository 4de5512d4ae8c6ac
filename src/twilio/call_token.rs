//! Call tokens: short-lived proof, minted by the voice webhook and handed
//! to Twilio in `<Parameter name="callToken">`, that a media stream belongs
//! to a call we accepted for a given tenant. The media websocket checks it
//! at `start` (`start.customParameters.callToken`) before trusting anything
//! in the stream.
//!
//! Format: `ct1.<payload>.<tag>`, both parts unpadded base64url, where
//! payload = customer id (16 bytes) ‖ expiry (i64 Unix seconds, big-endian)
//! ‖ call sid (ASCII), and tag = HMAC-SHA256(key, `ct1.<payload>`). The key
//! is derived from the master key with the label [`KEY_LABEL`], so it is
//! shared by every instance with the same master key and by nothing else.
//! Time is always an input: minting takes the expiry, checking takes `now`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::crypto::{Keyring, KeyringError};
use crate::db::CustomerId;

type HmacSha256 = Hmac<Sha256>;

/// Label of the subkey derived from the master key for call tokens.
pub const KEY_LABEL: &str = "twilio-call-token";

/// Version prefix of every token.
const PREFIX: &str = "ct1.";

/// Longest call sid a token may carry (Twilio's are 34 characters).
pub const MAX_CALL_SID_LEN: usize = 64;

/// What a valid token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallClaims {
    /// Twilio's `CallSid` the token was minted for.
    pub call_sid: String,
    /// The tenant whose number was called.
    pub customer_id: CustomerId,
    /// When the token stops being accepted (whole seconds).
    pub expires_at: DateTime<Utc>,
}

/// Why a token was not minted or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallTokenError {
    /// Not a token of ours (wrong shape or encoding).
    #[error("the call token is malformed")]
    Malformed,
    /// The tag does not match: forged, altered or minted under another key.
    #[error("the call token is not authentic")]
    Forged,
    /// Authentic but past its expiry.
    #[error("the call token has expired")]
    Expired,
    /// Authentic but minted for another call.
    #[error("the call token belongs to another call")]
    WrongCall,
    /// The call sid cannot be put in a token (empty, too long, not ASCII
    /// alphanumeric).
    #[error("call sid is not a valid Twilio sid")]
    InvalidCallSid,
}

/// The key that mints and checks call tokens.
#[derive(Clone)]
pub struct CallTokenKey {
    /// HMAC-SHA256 key; never printed.
    key: [u8; 32],
}

impl fmt::Debug for CallTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallTokenKey([redacted])")
    }
}

impl CallTokenKey {
    /// The key derived from the keyring's current master key.
    pub fn from_keyring(keyring: &Keyring) -> Result<Self, KeyringError> {
        Ok(Self::from_bytes(keyring.derive_subkey(KEY_LABEL)?))
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Mints a token for `call_sid` of `customer_id`, valid until
    /// `expires_at` (truncated to whole seconds).
    pub fn issue(
        &self,
        call_sid: &str,
        customer_id: CustomerId,
        expires_at: DateTime<Utc>,
    ) -> Result<String, CallTokenError> {
        if call_sid.is_empty()
            || call_sid.len() > MAX_CALL_SID_LEN
            || !call_sid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(CallTokenError::InvalidCallSid);
        }
        let mut payload = Vec::with_capacity(24 + call_sid.len());
        payload.extend_from_slice(customer_id.0.as_bytes());
        payload.extend_from_slice(&expires_at.timestamp().to_be_bytes());
        payload.extend_from_slice(call_sid.as_bytes());
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload));
        let tag = self.mac(&signed).finalize().into_bytes();
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// Checks a token's tag (in constant time) and expiry at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<CallClaims, CallTokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(CallTokenError::Malformed)?;
        let payload = signed
            .strip_prefix(PREFIX)
            .ok_or(CallTokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CallTokenError::Malformed)?;
        self.mac(signed)
            .verify_slice(&tag)
            .map_err(|_| CallTokenError::Forged)?;
        // Authentic from here on: we wrote this payload.
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CallTokenError::Malformed)?;
        if payload.len() < 25 {
            return Err(CallTokenError::Malformed);
        }
        let (id, rest) = payload.split_at(16);
        let (expiry, sid) = rest.split_at(8);
        let customer_id = CustomerId(Uuid::from_slice(id).map_err(|_| CallTokenError::Malformed)?);
        let expiry: [u8; 8] = expiry.try_into().map_err(|_| CallTokenError::Malformed)?;
        let expires_at = Utc
            .timestamp_opt(i64::from_be_bytes(expiry), 0)
            .single()
            .ok_or(CallTokenError::Malformed)?;
        let call_sid = String::from_utf8(sid.to_vec()).map_err(|_| CallTokenError::Malformed)?;
        if now >= expires_at {
            return Err(CallTokenError::Expired);
        }
        Ok(CallClaims {
            call_sid,
            customer_id,
            expires_at,
        })
    }

    /// [`CallTokenKey::verify`], and the token must name `call_sid` (the
    /// `start` message's `callSid`).
    pub fn verify_for_call(
        &self,
        token: &str,
        call_sid: &str,
        now: DateTime<Utc>,
    ) -> Result<CallClaims, CallTokenError> {
        let claims = self.verify(token, now)?;
        if claims.call_sid != call_sid {
            return Err(CallTokenError::WrongCall);
        }
        Ok(claims)
    }

    fn mac(&self, signed: &str) -> HmacSha256 {
        // HMAC accepts any key length; a 32-byte key never fails.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        mac.update(signed.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn key(byte: u8) -> CallTokenKey {
        CallTokenKey::from_bytes([byte; 32])
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn round_trips_until_expiry() {
        let customer = CustomerId::new();
        let expires = now() + Duration::seconds(120);
        let token = key(1).issue(SID, customer, expires).expect("issue");
        assert!(token.starts_with("ct1."));
        let claims = key(1).verify_for_call(&token, SID, now()).expect("valid");
        assert_eq!(claims.customer_id, customer);
        assert_eq!(claims.call_sid, SID);
        assert_eq!(claims.expires_at, expires);
        assert!(key(1)
            .verify(&token, expires - Duration::seconds(1))
            .is_ok());
        assert_eq!(key(1).verify(&token, expires), Err(CallTokenError::Expired));
    }

    #[test]
    fn other_keys_other_calls_and_edits_are_refused() {
        let token = key(1)
            .issue(SID, CustomerId::new(), now() + Duration::seconds(60))
            .expect("issue");
        assert_eq!(key(2).verify(&token, now()), Err(CallTokenError::Forged));
        assert_eq!(
            key(1).verify_for_call(&token, "CAother", now()),
            Err(CallTokenError::WrongCall)
        );
        // Flip one character of the payload, then of the tag.
        for position in [6, token.len() - 3] {
            let mut bytes = token.clone().into_bytes();
            bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(bytes).expect("ascii");
            assert!(key(1).verify(&edited, now()).is_err(), "{edited}");
        }
        for junk in ["", "ct1.", "ct1..", "x.y", "ct2.abc.def", "ct1.@@.@@"] {
            assert!(key(1).verify(junk, now()).is_err(), "{junk}");
        }
    }

    #[test]
    fn fits_a_twilio_parameter_and_rejects_odd_sids() {
        let longest = "C".repeat(MAX_CALL_SID_LEN);
        let token = key(1)
            .issue(&longest, CustomerId::new(), now())
            .expect("issue");
        assert!(token.len() < 500, "{} chars", token.len());
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
        for bad in ["", "CA 1", "CA\"1", &"C".repeat(MAX_CALL_SID_LEN + 1)] {
            assert_eq!(
                key(1).issue(bad, CustomerId::new(), now()),
                Err(CallTokenError::InvalidCallSid)
            );
        }
    }

    #[test]
    fn keyring_derived_keys_agree() {
        use crate::configuration::MasterKey;
        let ring = Keyring::new(
            1,
            MasterKey::from_bytes([5; 32]),
            std::collections::BTreeMap::new(),
        );
        let minted = CallTokenKey::from_keyring(&ring)
            .expect("key")
            .issue(SID, CustomerId::new(), now() + Duration::seconds(5))
            .expect("issue");
        assert!(CallTokenKey::from_keyring(&ring)
            .expect("key")
            .verify(&minted, now())
            .is_ok());
        assert_eq!(
            CallTokenKey::from_bytes([5; 32]).verify(&minted, now()),
            Err(CallTokenError::Forged)
        );
    }
}
