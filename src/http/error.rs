//! The HTTP boundary's error: a stable code and message for clients,
//! details for our logs only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db::StorageError;
use crate::platform::PlatformError;

/// An error as an API client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or bad credentials.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Draining or the database is down.
    #[error("{0}")]
    Unavailable(String),
    /// Our fault; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = ?source, "request failed");
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

impl From<PlatformError> for ApiError {
    fn from(error: PlatformError) -> Self {
        match error {
            PlatformError::NotFound(m) => ApiError::NotFound(m),
            PlatformError::Conflict(m) => ApiError::Conflict(m),
            PlatformError::Invalid(m) => ApiError::BadRequest(m),
            PlatformError::Storage(e) => e.into(),
            PlatformError::Keyring(e) => ApiError::Internal(e.into()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound => ApiError::NotFound("not found".into()),
            StorageError::Conflict(_) => ApiError::Conflict("already exists".into()),
            StorageError::Invalid(_) => ApiError::BadRequest("invalid data".into()),
            other => ApiError::Internal(other.into()),
        }
    }
}
