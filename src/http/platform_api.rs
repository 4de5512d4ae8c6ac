//! `/platform/api/…`: the platform team's JSON API. Every route needs a
//! platform-scope key (`Authorization: Bearer sbk_p_…`) and calls the same
//! [`crate::platform::Platform`] operations as the CLI.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::PlatformActor;
use super::{ApiError, AppState};
use crate::crypto::api_key::KeyScope;
use crate::platform::{CreateTenant, CreateUser, SetCredential};
use crate::repo;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list_tenants).post(create_tenant))
        .route("/tenants/{slug}", get(show_tenant))
        .route("/tenants/{slug}/suspend", post(suspend_tenant))
        .route("/tenants/{slug}/resume", post(resume_tenant))
        .route("/tenants/{slug}/numbers", post(assign_number))
        .route(
            "/tenants/{slug}/provider-settings",
            put(set_provider_settings),
        )
        .route(
            "/tenants/{slug}/credentials/{provider}",
            put(set_credential),
        )
        .route("/numbers/{number}", delete(release_number))
        .route("/users", post(create_user))
        .route("/apikeys", post(create_api_key))
        .route("/keys/rotate", post(rotate_keys))
        .route("/templates", get(list_templates))
}

/// Turns axum's JSON rejection into our error shape.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn list_tenants(
    State(state): State<AppState>,
    _actor: PlatformActor,
) -> Result<Json<Value>, ApiError> {
    let tenants = state.platform.list_tenants().await?;
    Ok(Json(json!({ "tenants": tenants })))
}

async fn create_tenant(
    State(state): State<AppState>,
    actor: PlatformActor,
    payload: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = body(payload)?;
    let created = state.platform.create_tenant(&actor.actor, input).await?;
    Ok((StatusCode::CREATED, Json(json!(created))))
}

async fn show_tenant(
    State(state): State<AppState>,
    _actor: PlatformActor,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.platform.show_tenant(&slug).await?)))
}

async fn suspend_tenant(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let customer = state
        .platform
        .set_tenant_status(&actor.actor, &slug, "suspended")
        .await?;
    Ok(Json(json!(customer)))
}

async fn resume_tenant(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let customer = state
        .platform
        .set_tenant_status(&actor.actor, &slug, "active")
        .await?;
    Ok(Json(json!(customer)))
}

async fn set_provider_settings(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path(slug): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let settings = body(payload)?;
    let customer = state
        .platform
        .set_provider_settings(&actor.actor, &slug, settings)
        .await?;
    Ok(Json(json!(customer)))
}

#[derive(Deserialize)]
struct AssignNumber {
    number: String,
}

async fn assign_number(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path(slug): Path<String>,
    payload: Result<Json<AssignNumber>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = body(payload)?;
    let number = state
        .platform
        .assign_number(&actor.actor, &slug, &input.number)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(number))))
}

async fn release_number(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path(number): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.platform.release_number(&actor.actor, &number).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_user(
    State(state): State<AppState>,
    actor: PlatformActor,
    payload: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = body(payload)?;
    let user = state.platform.create_user(&actor.actor, input).await?;
    Ok((StatusCode::CREATED, Json(json!(user))))
}

#[derive(Deserialize)]
struct CreateKey {
    scope: KeyScope,
    tenant: Option<String>,
    #[serde(default = "default_key_name")]
    name: String,
}

fn default_key_name() -> String {
    "api".to_string()
}

async fn create_api_key(
    State(state): State<AppState>,
    actor: PlatformActor,
    payload: Result<Json<CreateKey>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = body(payload)?;
    let key = state
        .platform
        .create_api_key(
            &actor.actor,
            input.scope,
            input.tenant.as_deref(),
            &input.name,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(key))))
}

#[derive(Deserialize)]
struct CredentialBody {
    secret: SecretString,
    public_id: Option<String>,
    #[serde(default)]
    settings: serde_json::Map<String, Value>,
}

async fn set_credential(
    State(state): State<AppState>,
    actor: PlatformActor,
    Path((slug, provider)): Path<(String, String)>,
    payload: Result<Json<CredentialBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let input = body(payload)?;
    let summary = state
        .platform
        .set_credential(
            &actor.actor,
            &slug,
            SetCredential {
                provider,
                secret: input.secret,
                public_id: input.public_id,
                settings: input.settings,
            },
        )
        .await?;
    Ok(Json(json!(summary)))
}

async fn rotate_keys(
    State(state): State<AppState>,
    actor: PlatformActor,
) -> Result<Json<Value>, ApiError> {
    let resealed = state.platform.rotate_keys(&actor.actor).await?;
    Ok(Json(json!({
        "resealed": resealed,
        "key_version": state.platform.keyring().current_version(),
    })))
}

async fn list_templates(
    State(state): State<AppState>,
    _actor: PlatformActor,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.platform.db().platform().await?;
    let templates = repo::templates::list(&mut conn).await?;
    Ok(Json(json!({ "templates": templates })))
}
