//! `X-Twilio-Signature`: computing and checking Twilio's request signature
//! (PROTOCOLS §3), hand-rolled over `hmac` + `sha1`.
//!
//! The signed string is the full URL Twilio requested (rebuilt by the
//! caller from the configured public base URL, never from proxy headers),
//! followed, for form posts, by `name + value` for every parameter: names
//! sorted bytewise, and for a repeated name each distinct value once, values
//! sorted. The signature is base64(HMAC-SHA1(auth token, that string)).
//!
//! Like the official SDKs, [`validate`] accepts a signature computed over a
//! few spellings of the same URL, because Twilio's own signing is not
//! consistent about them:
//! - the URL with its port removed, and the URL with the scheme's default
//!   port added when it has none (`:443` for https/wss, `:80` for http/ws);
//!   a URL that carries a port is also tried as given;
//! - each of those with `'` in the query written `%27` (the Node SDK).
//!
//! JSON bodies are signed differently: Twilio puts `bodySHA256=<hex>` in the
//! query and signs the URL alone; both the signature and the body hash must
//! match, and a JSON body without `bodySHA256` is refused.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;

/// What was posted alongside the URL.
#[derive(Debug, Clone, Copy)]
pub enum SignedPayload<'a> {
    /// Form parameters in arrival order (repeats allowed), already decoded.
    Form(&'a [(String, String)]),
    /// A raw JSON body, covered by the `bodySHA256` query parameter.
    Json(&'a [u8]),
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature matches none of the accepted spellings of the URL.
    #[error("the signature does not match the URL and parameters")]
    Mismatch,
    /// A JSON body arrived without a `bodySHA256` query parameter.
    #[error("a JSON body must be covered by a bodySHA256 query parameter")]
    MissingBodyHash,
    /// The body does not hash to the signed `bodySHA256`.
    #[error("the body does not match its bodySHA256")]
    BodyHashMismatch,
}

/// The signature Twilio would send for `url` and form `params`, exactly as
/// given (no URL variants). Used by tests and fake Twilio servers.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let tag = mac(auth_token, url, &canonical_params(params)).finalize();
    base64::engine::general_purpose::STANDARD.encode(tag.into_bytes())
}

/// Checks `signature` (the header's value) for a request to `url` carrying
/// `payload`, with Twilio's auth token. The comparison is constant-time.
pub fn validate(
    auth_token: &str,
    url: &str,
    payload: SignedPayload<'_>,
    signature: &str,
) -> Result<(), SignatureError> {
    let params = match payload {
        SignedPayload::Form(params) => canonical_params(params),
        SignedPayload::Json(_) => String::new(),
    };
    // A header that is not base64 cannot match; decoding first lets the
    // MAC library do the constant-time comparison on raw bytes.
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return Err(SignatureError::Mismatch);
    };
    let signed = url_variants(url).iter().any(|candidate| {
        mac(auth_token, candidate, &params)
            .verify_slice(&expected)
            .is_ok()
    });
    if !signed {
        return Err(SignatureError::Mismatch);
    }
    if let SignedPayload::Json(body) = payload {
        let claimed = query_value(url, "bodySHA256").ok_or(SignatureError::MissingBodyHash)?;
        let actual = hex::encode(Sha256::digest(body));
        if !claimed.eq_ignore_ascii_case(&actual) {
            return Err(SignatureError::BodyHashMismatch);
        }
    }
    Ok(())
}

/// HMAC-SHA1 keyed with the auth token over `url` then `params`.
fn mac(auth_token: &str, url: &str, params: &str) -> HmacSha1 {
    // HMAC takes keys of any length, so this never falls back in practice;
    // the fallback keys with nothing, which matches no real signature.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| <HmacSha1 as Mac>::new(&Default::default()));
    mac.update(url.as_bytes());
    mac.update(params.as_bytes());
    mac
}

/// `name + value` for every parameter: names sorted bytewise, each distinct
/// value of a name once, values sorted.
fn canonical_params(params: &[(String, String)]) -> String {
    let mut by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        by_name.entry(name).or_default().insert(value);
    }
    let mut out = String::new();
    for (name, values) in by_name {
        for value in values {
            out.push_str(name);
            out.push_str(value);
        }
    }
    out
}

/// The first value of `name` in the URL's query, percent-decoded.
fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The spellings of `url` a signature may have been computed over (see the
/// module documentation), without duplicates, the URL as given first.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    if let Some(parts) = UrlParts::split(url) {
        variants.push(parts.with_port(None));
        match (parts.port, default_port(parts.scheme)) {
            (Some(_), _) => {}
            (None, Some(default)) => variants.push(parts.with_port(Some(default))),
            (None, None) => {}
        }
    }
    let quoted: Vec<String> = variants.iter().map(|v| encode_quotes_in_query(v)).collect();
    variants.extend(quoted);
    let mut seen = BTreeSet::new();
    variants.retain(|v| seen.insert(v.clone()));
    variants
}

/// `'` in the query written as `%27`, as the Node SDK does before signing.
fn encode_quotes_in_query(url: &str) -> String {
    match url.split_once('?') {
        Some((head, query)) => format!("{head}?{}", query.replace('\'', "%27")),
        None => url.to_string(),
    }
}

/// The default port of a scheme, as text.
fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some("443"),
        "http" | "ws" => Some("80"),
        _ => None,
    }
}

/// An absolute URL cut around its port.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    /// `https`, `http`, `wss`, …
    scheme: &'a str,
    /// `user:pass@` including the `@`, or empty.
    userinfo: &'a str,
    /// Host name, IPv4 address or bracketed IPv6 address.
    host: &'a str,
    /// The port digits, when the URL names one.
    port: Option<&'a str>,
    /// Path, query and fragment, from the first `/`, `?` or `#`.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        let (host, port) = if host_port.starts_with('[') {
            // [v6]:port
            let close = host_port.find(']')?;
            let (host, tail) = host_port.split_at(close + 1);
            match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if tail.is_empty() => (host, None),
                None => return None,
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        Some(Self {
            scheme,
            userinfo,
            host,
            port,
            rest,
        })
    }

    /// The URL with `port` in place of its own (`None` drops the port).
    fn with_port(&self, port: Option<&str>) -> String {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{}{port}{}",
            self.scheme, self.userinfo, self.host, self.rest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// `fixtures/twilio/signature-vectors.json`, copied verbatim from the
    /// shared conformance vectors (official SDK test suites).
    const VECTORS: &str = include_str!("../../fixtures/twilio/signature-vectors.json");

    #[derive(Deserialize)]
    struct Vectors {
        auth_token: String,
        default_params: BTreeMap<String, String>,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        validate_url: String,
        params: Option<String>,
        params_multi: Option<Vec<(String, String)>>,
        body: Option<String>,
        signature: String,
        valid: bool,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(VECTORS).expect("the vector file parses")
    }

    #[test]
    fn every_sdk_conformance_vector() {
        let vectors = vectors();
        assert_eq!(vectors.cases.len(), 17, "a vector was added or lost");
        let defaults: Vec<(String, String)> = vectors
            .default_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for case in &vectors.cases {
            let result = match (&case.params, &case.params_multi, &case.body) {
                (Some(which), None, None) => {
                    assert_eq!(which, "default", "{}: unknown params set", case.name);
                    validate(
                        &vectors.auth_token,
                        &case.validate_url,
                        SignedPayload::Form(&defaults),
                        &case.signature,
                    )
                }
                (None, Some(multi), None) => validate(
                    &vectors.auth_token,
                    &case.validate_url,
                    SignedPayload::Form(multi),
                    &case.signature,
                ),
                (None, None, Some(body)) => validate(
                    &vectors.auth_token,
                    &case.validate_url,
                    SignedPayload::Json(body.as_bytes()),
                    &case.signature,
                ),
                _ => panic!(
                    "{}: needs exactly one of params, params_multi, body",
                    case.name
                ),
            };
            assert_eq!(
                result.is_ok(),
                case.valid,
                "vector `{}` gave {result:?}",
                case.name
            );
        }
    }

    #[test]
    fn valid_vectors_fail_with_another_token_or_a_changed_parameter() {
        let vectors = vectors();
        let mut defaults: Vec<(String, String)> = vectors
            .default_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let basic = &vectors.cases[0];
        assert_eq!(basic.name, "basic");
        let url = &basic.validate_url;
        let form = SignedPayload::Form(&defaults);
        assert_eq!(validate("12345", url, form, &basic.signature), Ok(()));
        assert_eq!(
            validate("54321", url, form, &basic.signature),
            Err(SignatureError::Mismatch)
        );
        defaults[0].1.push('0');
        assert_eq!(
            validate(
                "12345",
                url,
                SignedPayload::Form(&defaults),
                &basic.signature
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn json_body_hash_must_match_the_body() {
        let vectors = vectors();
        let case = vectors
            .cases
            .iter()
            .find(|c| c.name == "json_body")
            .expect("json_body vector");
        assert_eq!(
            validate(
                &vectors.auth_token,
                &case.validate_url,
                SignedPayload::Json(b"{\"property\": \"other\"}"),
                &case.signature
            ),
            Err(SignatureError::BodyHashMismatch)
        );
        let without = vectors
            .cases
            .iter()
            .find(|c| c.name == "json_body_without_sha_param")
            .expect("vector");
        // Signed over the URL alone, it still lacks the body hash.
        let over_url = sign(&vectors.auth_token, &without.validate_url, &[]);
        assert_eq!(
            validate(
                &vectors.auth_token,
                &without.validate_url,
                SignedPayload::Json(b"{}"),
                &over_url
            ),
            Err(SignatureError::MissingBodyHash)
        );
    }

    #[test]
    fn sign_round_trips_and_orders_repeated_names() {
        let params = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "y".to_string()),
            ("a".to_string(), "x".to_string()),
            ("a".to_string(), "y".to_string()),
        ];
        assert_eq!(canonical_params(&params), "axayb2");
        let url = "https://voice.example.com/twilio/voice?x=1";
        let signature = sign("token", url, &params);
        assert_eq!(
            validate("token", url, SignedPayload::Form(&params), &signature),
            Ok(())
        );
        let reordered = vec![params[2].clone(), params[0].clone(), params[1].clone()];
        assert_eq!(
            validate("token", url, SignedPayload::Form(&reordered), &signature),
            Ok(())
        );
        assert!(validate("token", url, SignedPayload::Form(&params), "").is_err());
        assert!(validate("token", url, SignedPayload::Form(&params), "!!notbase64").is_err());
    }

    #[test]
    fn url_variants_cover_ports_and_quotes() {
        assert_eq!(
            url_variants("https://h.example/p?q=1"),
            vec!["https://h.example/p?q=1", "https://h.example:443/p?q=1"]
        );
        assert_eq!(
            url_variants("wss://h.example:8443/media"),
            vec!["wss://h.example:8443/media", "wss://h.example/media"]
        );
        assert_eq!(
            url_variants("http://[::1]:8080/x?a='b'"),
            vec![
                "http://[::1]:8080/x?a='b'",
                "http://[::1]/x?a='b'",
                "http://[::1]:8080/x?a=%27b%27",
                "http://[::1]/x?a=%27b%27",
            ]
        );
        assert_eq!(
            url_variants("https://u:p@h.example?x"),
            vec!["https://u:p@h.example?x", "https://u:p@h.example:443?x"]
        );
        // Not an absolute URL: only the string as given.
        assert_eq!(url_variants("/relative"), vec!["/relative"]);
    }

    #[test]
    fn a_signature_over_another_host_does_not_validate() {
        let params = vec![("CallSid".to_string(), "CA1".to_string())];
        let spoofed = sign("token", "https://evil.example/twilio/voice", &params);
        assert_eq!(
            validate(
                "token",
                "https://voice.example.com/twilio/voice",
                SignedPayload::Form(&params),
                &spoofed
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
