//! Caller memory as the rest of the platform reads and writes it: the
//! caller card loaded at call start, the in-process [`MemoryService`], the
//! [`MemoryClient`] interface (in-process or over HTTP) and the memory API.
//!
//! | module      | owns                                                                  |
//! |-------------|-----------------------------------------------------------------------|
//! | [`card`]    | the caller card: one SQL statement, the greeting name, the LLM context |
//! | [`service`] | memory operations on the database, tenant by tenant                    |
//! | [`client`]  | [`MemoryClient`]: in-process or HTTP (a separately deployed service)   |
//! | `http`      | the memory API routes (`/memory/store`, `/v1/…`, `/v2/…`)               |
//! | `openapi`   | the OpenAPI 3 document served at `GET /openapi.json`                   |
//!
//! Every operation names its tenant explicitly; memory about a caller is
//! always memory about that caller *for one tenant*. A number that calls two
//! tenants has two unrelated memories, and row-level security keeps it so.

pub mod card;
pub mod client;
mod http;
mod openapi;
pub mod service;

pub use card::{load_card, render_quick_bio, CallerCard};
pub use client::{HttpMemoryClient, InProcessMemoryClient, MemoryClient};
pub use service::{MemoryError, MemoryService};

pub(crate) use http::routes;

use crate::db::CustomerId;

/// Whether `user_id` is an E.164 number (`+`, then 7 to 15 digits, no
/// leading zero), the form caller ids are stored in.
pub fn is_e164(user_id: &str) -> bool {
    let Some(digits) = user_id.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The conversation thread id other services use for one caller of one
/// tenant: `customer_{customer_id}_user_{digits}` (the number without `+`).
pub fn thread_id(customer_id: CustomerId, user_id: &str) -> String {
    let digits: String = user_id.chars().filter(char::is_ascii_digit).collect();
    format!("customer_{customer_id}_user_{digits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_is_strict() {
        assert!(is_e164("+15551234567"));
        assert!(is_e164("+4930123"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+0551234567"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+1555123456789012"));
        assert!(!is_e164("+1 555 123 4567"));
        assert!(!is_e164(""));
    }

    #[test]
    fn thread_ids_name_tenant_and_digits() {
        let id: CustomerId = "6f1c1a52-3c0e-4a57-9f53-5a0b2f4c8d11"
            .parse()
            .expect("uuid");
        assert_eq!(
            thread_id(id, "+15551234567"),
            "customer_6f1c1a52-3c0e-4a57-9f53-5a0b2f4c8d11_user_15551234567"
        );
    }
}
