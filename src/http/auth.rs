//! Bearer-key authentication for the platform API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::{ExposeSecret, SecretString};

use super::{ApiError, AppState};
use crate::crypto::api_key::{self, KeyScope};
use crate::db::directory;
use crate::repo;

/// A request authenticated with a platform-scope key.
pub struct PlatformActor {
    /// `platform-key:<prefix>`, written to audit logs.
    pub actor: String,
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<SecretString> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_string()))
}

impl FromRequestParts<AppState> for PlatformActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let scope = api_key::scope_of(&token).ok_or(ApiError::Unauthorized)?;
        let hash = api_key::hash(token.expose_secret());
        let forbidden = || ApiError::Forbidden("this endpoint needs a platform key".into());
        if scope == KeyScope::Tenant {
            // A real tenant key is authenticated but not allowed here.
            return match directory::authenticate_tenant_key(state.platform.db(), &hash).await? {
                Some(_) => Err(forbidden()),
                None => Err(ApiError::Unauthorized),
            };
        }
        let mut conn = state.platform.db().platform().await?;
        let key = repo::platform::find_key(&mut conn, &hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if key.scope != KeyScope::Platform.as_str() {
            return Err(forbidden());
        }
        Ok(PlatformActor {
            actor: format!("platform-key:{}", key.prefix),
        })
    }
}
