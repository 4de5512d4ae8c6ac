//! A webhook request from Twilio as we trust it: the URL rebuilt from the
//! configured public base URL, the received fields, and the check of its
//! `X-Twilio-Signature` against the right account's auth token (the
//! platform's, or a bring-your-own-account tenant's sealed credential).

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, Uri};
use secrecy::{ExposeSecret, SecretString};

use super::signature::{self, SignedPayload};
use super::webhooks::WebhookError;
use crate::configuration::Settings;
use crate::db::CustomerId;
use crate::http::AppState;

/// Name of the header Twilio signs requests with.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// One webhook request, parsed leniently: every field is optional and
/// unknown fields are kept (they are signed too).
#[derive(Debug)]
pub struct TwilioRequest {
    /// The URL Twilio requested: public base URL + path + raw query.
    url: String,
    /// The request path, for logs.
    path: String,
    /// The received fields in arrival order: the form body of a POST, the
    /// query of a GET.
    fields: Vec<(String, String)>,
    /// How the body is covered by the signature.
    body: SignedBody,
    /// The `X-Twilio-Signature` header value.
    signature: String,
}

/// What the signature covers beyond the URL.
#[derive(Debug)]
enum SignedBody {
    /// The form fields (POST).
    Form,
    /// Nothing: a GET, whose fields are in the signed URL.
    Empty,
    /// A raw JSON body, covered through `bodySHA256`.
    Json(Bytes),
}

impl TwilioRequest {
    /// Parses a request; a missing signature header is an error before
    /// anything else is looked at.
    pub fn parse(
        settings: &Settings,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Self, WebhookError> {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .ok_or(WebhookError::MissingSignature)?
            .to_str()
            .map_err(|_| WebhookError::BadSignature)?
            .trim()
            .to_string();
        // Never from Host or X-Forwarded-*: a proxy (or an attacker) could
        // make us check a signature over a URL of their choosing.
        let mut url = settings.public_url.join(uri.path());
        if let Some(query) = uri.query() {
            url.push('?');
            url.push_str(query);
        }
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let (fields, body) = if *method == Method::GET {
            let query = uri.query().unwrap_or_default();
            (decode_form(query.as_bytes()), SignedBody::Empty)
        } else if is_json {
            (Vec::new(), SignedBody::Json(body))
        } else {
            (decode_form(&body), SignedBody::Form)
        };
        Ok(Self {
            url,
            path: uri.path().to_string(),
            fields,
            body,
            signature,
        })
    }

    /// The first value of a field, trimmed; `None` when absent or empty.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// The URL the signature is checked against.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks the signature with the auth token of the account the request
    /// claims (`AccountSid`): the platform's, or, when `byok_tenant` is
    /// given, that tenant's own Twilio credential if its AccountSid matches.
    /// Every refusal is logged without secrets or phone numbers.
    pub async fn authenticate(
        &self,
        state: &AppState,
        byok_tenant: Option<CustomerId>,
    ) -> Result<(), WebhookError> {
        let account_sid = self.field("AccountSid");
        let Some(token) = signing_token(state, account_sid, byok_tenant).await? else {
            tracing::warn!(
                path = %self.path,
                account_sid = account_sid.unwrap_or("-"),
                call_sid = self.field("CallSid").unwrap_or("-"),
                "twilio webhook refused: no auth token for this account"
            );
            return Err(WebhookError::BadSignature);
        };
        let payload = match &self.body {
            SignedBody::Form => SignedPayload::Form(&self.fields),
            SignedBody::Empty => SignedPayload::Form(&[]),
            SignedBody::Json(raw) => SignedPayload::Json(raw),
        };
        signature::validate(token.expose_secret(), &self.url, payload, &self.signature).map_err(
            |reason| {
                tracing::warn!(
                    path = %self.path,
                    %reason,
                    account_sid = account_sid.unwrap_or("-"),
                    call_sid = self.field("CallSid").unwrap_or("-"),
                    "twilio webhook refused: bad signature"
                );
                WebhookError::BadSignature
            },
        )
    }
}

/// Whether `account_sid` names the platform's own Twilio account (a
/// request that names none is taken to be the platform's).
pub fn is_platform_account(state: &AppState, account_sid: Option<&str>) -> bool {
    match account_sid {
        None => true,
        Some(sid) => state.settings.twilio.account_sid.as_deref() == Some(sid),
    }
}

/// The auth token a request claiming `account_sid` must be signed with.
async fn signing_token(
    state: &AppState,
    account_sid: Option<&str>,
    byok_tenant: Option<CustomerId>,
) -> Result<Option<SecretString>, WebhookError> {
    if is_platform_account(state, account_sid) {
        return Ok(state.settings.twilio.auth_token.clone());
    }
    let (Some(sid), Some(customer)) = (account_sid, byok_tenant) else {
        return Ok(None);
    };
    let credential = state.platform.open_credential(customer, "twilio").await?;
    Ok(credential.and_then(|(summary, secret)| {
        (summary.public_id.as_deref() == Some(sid)).then_some(secret)
    }))
}

fn decode_form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings() -> Settings {
        let env: BTreeMap<String, String> = [(
            "SWITCHBOARD_PUBLIC_URL".to_string(),
            "https://voice.example.com".to_string(),
        )]
        .into_iter()
        .collect();
        Settings::load_from(None, &env).expect("settings")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn url_comes_from_the_public_base_not_the_host_header() {
        let uri: Uri = "/twilio/voice?x=1&y=%27".parse().expect("uri");
        let request = TwilioRequest::parse(
            &settings(),
            &Method::POST,
            &uri,
            &headers(&[
                (SIGNATURE_HEADER, "sig"),
                ("host", "evil.example"),
                ("x-forwarded-host", "evil.example"),
            ]),
            Bytes::from_static(b"To=%2B18005551212&Extra=&CallSid=CA1&CallSid=CA2"),
        )
        .expect("parsed");
        assert_eq!(
            request.url(),
            "https://voice.example.com/twilio/voice?x=1&y=%27"
        );
        assert_eq!(request.field("To"), Some("+18005551212"));
        assert_eq!(request.field("CallSid"), Some("CA1"));
        assert_eq!(request.field("Extra"), None);
        assert_eq!(request.field("Missing"), None);
        assert_eq!(request.fields.len(), 4);
    }

    #[test]
    fn a_missing_signature_is_its_own_error() {
        let uri: Uri = "/twilio/voice".parse().expect("uri");
        let result = TwilioRequest::parse(
            &settings(),
            &Method::POST,
            &uri,
            &HeaderMap::new(),
            Bytes::new(),
        );
        assert!(matches!(result, Err(WebhookError::MissingSignature)));
    }

    #[test]
    fn get_fields_come_from_the_query_and_json_bodies_are_kept_raw() {
        let uri: Uri = "/twilio/voice?CallSid=CA9&To=%2B1".parse().expect("uri");
        let get = TwilioRequest::parse(
            &settings(),
            &Method::GET,
            &uri,
            &headers(&[(SIGNATURE_HEADER, "sig")]),
            Bytes::new(),
        )
        .expect("parsed");
        assert_eq!(get.field("CallSid"), Some("CA9"));
        assert!(matches!(get.body, SignedBody::Empty));
        let json = TwilioRequest::parse(
            &settings(),
            &Method::POST,
            &"/twilio/status".parse().expect("uri"),
            &headers(&[
                (SIGNATURE_HEADER, "sig"),
                ("content-type", "Application/JSON; charset=utf-8"),
            ]),
            Bytes::from_static(b"{}"),
        )
        .expect("parsed");
        assert!(matches!(json.body, SignedBody::Json(_)));
        assert!(json.fields.is_empty());
    }
}
