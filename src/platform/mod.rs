//! Platform operations: what the platform team does to tenants, numbers,
//! users, keys and credentials. The CLI and `/platform/api` both call these,
//! so the two surfaces cannot drift apart. Every change is audited, in the
//! tenant's audit log and in the platform audit log.

pub mod phone;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::api_key::{self, KeyScope};
use crate::crypto::{password, Keyring, KeyringError};
use crate::db::directory::{self, DirectoryEntry};
use crate::db::{CustomerId, Db, StorageError, TenantTx};
use crate::repo::{
    self, credentials::CredentialSummary, customers::Customer, numbers::PhoneNumber,
};

/// Why a platform operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It already exists or is held by someone else.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Sealing or opening a secret failed.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Input of `tenant create`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateTenant {
    /// Unique slug (`peterson`).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Industry template slug (`insurance`).
    pub template: String,
    /// Numbers to assign right away.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Agent name; defaults to "Ava".
    pub agent_name: Option<String>,
    /// Greeting; defaults to one built from the names.
    pub greeting: Option<String>,
    /// Plan tier; defaults to `starter`.
    pub plan_tier: Option<String>,
    /// Monthly call limit.
    pub monthly_call_limit: Option<i32>,
    /// IANA time zone; defaults to UTC.
    pub timezone: Option<String>,
    /// Human transfer number.
    pub transfer_number: Option<String>,
    /// TTS voice id.
    pub voice_id: Option<String>,
    /// Personality / brand voice JSON.
    pub personality: Option<serde_json::Value>,
    /// Topics the agent must avoid.
    #[serde(default)]
    pub prohibited_topics: Vec<String>,
}

/// A tenant with its numbers, credentials and this month's usage.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDetails {
    /// The tenant row.
    pub customer: Customer,
    /// Assigned numbers.
    pub numbers: Vec<PhoneNumber>,
    /// BYOK credentials (hints only).
    pub credentials: Vec<CredentialSummary>,
    /// This month's usage.
    pub usage_this_month: repo::usage::Usage,
}

/// Input of `user create`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateUser {
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `platform-admin`, `admin`, `agent` or `viewer`.
    pub role: String,
    /// Tenant slug (all roles but `platform-admin`).
    pub tenant: Option<String>,
    /// The password; never logged.
    #[serde(skip_serializing)]
    pub password: SecretString,
}

/// A created user.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedUser {
    /// Account id.
    pub user_id: uuid::Uuid,
    /// Email.
    pub email: String,
    /// Role.
    pub role: String,
    /// Tenant slug, for tenant staff.
    pub tenant: Option<String>,
}

/// A created API key; `key` is shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// Key id.
    pub key_id: uuid::Uuid,
    /// `platform`, `service` or `tenant`.
    pub scope: KeyScope,
    /// Tenant slug for tenant keys.
    pub tenant: Option<String>,
    /// Prefix to recognise it later.
    pub prefix: String,
    /// The whole key. Store it now: only its hash is kept.
    pub key: String,
}

/// Input of `credentials set`.
#[derive(Debug, Clone, Deserialize)]
pub struct SetCredential {
    /// Vendor: `twilio`, `openai`, `elevenlabs` or `deepgram`.
    pub provider: String,
    /// The secret (auth token or API key); never logged or returned.
    pub secret: SecretString,
    /// Non-secret id (Twilio AccountSid).
    pub public_id: Option<String>,
    /// Non-secret settings (base URL, model).
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The platform's operations over one database and keyring.
#[derive(Clone)]
pub struct Platform {
    /// Application-role pool.
    db: Db,
    /// Master keys for credential sealing.
    keyring: Keyring,
}

impl Platform {
    /// Wraps a pool and a keyring.
    pub fn new(db: Db, keyring: Keyring) -> Self {
        Self { db, keyring }
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The tenant id for `slug`, or a not-found error naming it.
    pub async fn tenant_id(&self, slug: &str) -> Result<CustomerId, PlatformError> {
        directory::customer_by_slug(&self.db, slug)
            .await?
            .ok_or_else(|| PlatformError::NotFound(format!("no tenant with slug `{slug}`")))
    }

    async fn tenant_tx(&self, slug: &str) -> Result<TenantTx, PlatformError> {
        let id = self.tenant_id(slug).await?;
        Ok(self.db.tenant(id).await?)
    }

    async fn platform_audit(
        &self,
        actor: &str,
        action: &str,
        subject: Option<CustomerId>,
        details: serde_json::Value,
    ) -> Result<(), PlatformError> {
        let mut tx = self.db.platform().await?;
        repo::platform::audit(&mut tx, actor, action, subject, details).await?;
        tx.commit().await.map_err(StorageError::from)?;
        Ok(())
    }

    /// Creates a tenant and assigns its first numbers, atomically.
    pub async fn create_tenant(
        &self,
        actor: &str,
        input: CreateTenant,
    ) -> Result<TenantDetails, PlatformError> {
        let slug = input.slug.trim().to_ascii_lowercase();
        if !valid_slug(&slug) {
            return Err(PlatformError::Invalid(format!(
                "`{slug}` is not a valid slug: use 2-63 lowercase letters, digits and dashes"
            )));
        }
        let name = input.name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(PlatformError::Invalid(
                "name must be 1-200 characters".into(),
            ));
        }
        let numbers = input
            .numbers
            .iter()
            .map(|n| phone::normalize_e164(n).map_err(PlatformError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let transfer_number = input
            .transfer_number
            .as_deref()
            .map(|n| phone::normalize_e164(n).map_err(PlatformError::Invalid))
            .transpose()?;
        let template = {
            let mut conn = self.db.platform().await?;
            repo::templates::latest(&mut conn, &input.template).await?
        }
        .ok_or_else(|| {
            PlatformError::Invalid(format!("unknown industry template `{}`", input.template))
        })?;
        if directory::customer_by_slug(&self.db, &slug)
            .await?
            .is_some()
        {
            return Err(PlatformError::Conflict(format!(
                "a tenant with slug `{slug}` already exists"
            )));
        }
        let agent_name = input.agent_name.unwrap_or_else(|| "Ava".to_string());
        let greeting = input.greeting.unwrap_or_else(|| {
            format!("Thank you for calling {name}, this is {agent_name}. How can I help you today?")
        });
        let new = repo::customers::NewCustomer {
            slug: slug.clone(),
            name,
            plan_tier: input.plan_tier.unwrap_or_else(|| "starter".into()),
            monthly_call_limit: input.monthly_call_limit,
            agent_name,
            greeting,
            voice_id: input.voice_id,
            personality: input.personality.unwrap_or_else(|| json!({})),
            prohibited_topics: input.prohibited_topics,
            template_slug: template.slug,
            template_version: template.version,
            timezone: input.timezone.unwrap_or_else(|| "UTC".into()),
            transfer_number,
        };
        let id = CustomerId::new();
        let mut tx = self.db.tenant(id).await?;
        let customer = repo::customers::create(&mut tx, &new)
            .await
            .map_err(|e| match e {
                StorageError::Conflict(_) => {
                    PlatformError::Conflict(format!("a tenant with slug `{slug}` already exists"))
                }
                other => other.into(),
            })?;
        let mut assigned = Vec::new();
        for number in &numbers {
            assigned.push(assign_in(&mut tx, number).await?);
        }
        repo::audit::record(
            &mut tx,
            actor,
            "tenant.create",
            Some(&slug),
            json!({ "numbers": numbers }),
        )
        .await?;
        tx.commit().await?;
        self.platform_audit(actor, "tenant.create", Some(id), json!({ "slug": slug }))
            .await?;
        tracing::info!(%slug, customer_id = %id, "tenant created");
        Ok(TenantDetails {
            customer,
            numbers: assigned,
            credentials: Vec::new(),
            usage_this_month: Default::default(),
        })
    }

    /// Every tenant with this month's headline usage.
    pub async fn list_tenants(&self) -> Result<Vec<DirectoryEntry>, PlatformError> {
        let month = repo::usage::month_of(Utc::now().date_naive());
        Ok(directory::customer_directory(&self.db, month).await?)
    }

    /// One tenant in full.
    pub async fn show_tenant(&self, slug: &str) -> Result<TenantDetails, PlatformError> {
        let mut tx = self.tenant_tx(slug).await?;
        let customer = repo::customers::get(&mut tx).await?;
        let numbers = repo::numbers::list(&mut tx).await?;
        let credentials = repo::credentials::list(&mut tx).await?;
        let usage_this_month = repo::usage::get(&mut tx, Utc::now().date_naive()).await?;
        tx.commit().await?;
        Ok(TenantDetails {
            customer,
            numbers,
            credentials,
            usage_this_month,
        })
    }

    /// Suspends (calls are rejected) or resumes a tenant.
    pub async fn set_tenant_status(
        &self,
        actor: &str,
        slug: &str,
        status: &str,
    ) -> Result<Customer, PlatformError> {
        if !matches!(status, "active" | "suspended") {
            return Err(PlatformError::Invalid(format!(
                "status must be active or suspended, not `{status}`"
            )));
        }
        let mut tx = self.tenant_tx(slug).await?;
        let previous = repo::customers::set_status(&mut tx, status).await?;
        let action = if status == "suspended" {
            "tenant.suspend"
        } else {
            "tenant.resume"
        };
        repo::audit::record(
            &mut tx,
            actor,
            action,
            Some(slug),
            json!({ "previous": previous }),
        )
        .await?;
        let customer = repo::customers::get(&mut tx).await?;
        tx.commit().await?;
        self.platform_audit(
            actor,
            action,
            Some(customer.customer_id),
            json!({ "slug": slug }),
        )
        .await?;
        Ok(customer)
    }

    /// Replaces a tenant's provider choices and settings (validated by
    /// [`crate::providers::setup::validate_provider_settings`]). Calls that
    /// start afterwards use them.
    pub async fn set_provider_settings(
        &self,
        actor: &str,
        slug: &str,
        settings: serde_json::Value,
    ) -> Result<Customer, PlatformError> {
        crate::providers::setup::validate_provider_settings(&settings)
            .map_err(PlatformError::Invalid)?;
        let mut tx = self.tenant_tx(slug).await?;
        let previous = repo::customers::set_provider_settings(&mut tx, &settings).await?;
        repo::audit::record(
            &mut tx,
            actor,
            "tenant.provider_settings",
            Some(slug),
            json!({ "previous": previous, "new": settings }),
        )
        .await?;
        let customer = repo::customers::get(&mut tx).await?;
        tx.commit().await?;
        self.platform_audit(
            actor,
            "tenant.provider_settings",
            Some(customer.customer_id),
            json!({ "slug": slug }),
        )
        .await?;
        Ok(customer)
    }

    /// Assigns a number to a tenant.
    pub async fn assign_number(
        &self,
        actor: &str,
        slug: &str,
        number: &str,
    ) -> Result<PhoneNumber, PlatformError> {
        let e164 = phone::normalize_e164(number).map_err(PlatformError::Invalid)?;
        let mut tx = self.tenant_tx(slug).await?;
        let assigned = assign_in(&mut tx, &e164).await?;
        repo::audit::record(&mut tx, actor, "number.assign", Some(&e164), json!({})).await?;
        let id = tx.customer_id();
        tx.commit().await?;
        self.platform_audit(actor, "number.assign", Some(id), json!({ "number": e164 }))
            .await?;
        Ok(assigned)
    }

    /// Releases a number from whichever tenant holds it.
    pub async fn release_number(
        &self,
        actor: &str,
        number: &str,
    ) -> Result<CustomerId, PlatformError> {
        let e164 = phone::normalize_e164(number).map_err(PlatformError::Invalid)?;
        let route = directory::resolve_number(&self.db, &e164)
            .await?
            .ok_or_else(|| {
                PlatformError::NotFound(format!("{e164} is not assigned to any tenant"))
            })?;
        let mut tx = self.db.tenant(route.customer_id).await?;
        if !repo::numbers::release(&mut tx, &e164).await? {
            return Err(PlatformError::NotFound(format!(
                "{e164} is not assigned to any tenant"
            )));
        }
        repo::audit::record(&mut tx, actor, "number.release", Some(&e164), json!({})).await?;
        tx.commit().await?;
        self.platform_audit(
            actor,
            "number.release",
            Some(route.customer_id),
            json!({ "number": e164 }),
        )
        .await?;
        Ok(route.customer_id)
    }

    /// Creates a platform operator or a tenant staff account.
    pub async fn create_user(
        &self,
        actor: &str,
        input: CreateUser,
    ) -> Result<CreatedUser, PlatformError> {
        let email = input.email.trim().to_ascii_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(PlatformError::Invalid(format!(
                "`{email}` is not an email address"
            )));
        }
        let hash =
            password::hash(&input.password).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let name = input.name.trim();
        if input.role == "platform-admin" {
            if input.tenant.is_some() {
                return Err(PlatformError::Invalid(
                    "platform admins belong to no tenant".into(),
                ));
            }
            let mut tx = self.db.platform().await?;
            let id = repo::platform::create_admin(&mut tx, &email, name, &hash)
                .await
                .map_err(|e| {
                    conflict_as(e, format!("a platform admin `{email}` already exists"))
                })?;
            repo::platform::audit(
                &mut tx,
                actor,
                "user.create",
                None,
                json!({ "email": email, "role": "platform-admin" }),
            )
            .await?;
            tx.commit().await.map_err(StorageError::from)?;
            return Ok(CreatedUser {
                user_id: id,
                email,
                role: input.role,
                tenant: None,
            });
        }
        if !matches!(input.role.as_str(), "admin" | "agent" | "viewer") {
            return Err(PlatformError::Invalid(format!(
                "role must be platform-admin, admin, agent or viewer, not `{}`",
                input.role
            )));
        }
        let slug = input.tenant.ok_or_else(|| {
            PlatformError::Invalid(format!("role `{}` needs a tenant", input.role))
        })?;
        let mut tx = self.tenant_tx(&slug).await?;
        let user = repo::staff::create(&mut tx, &email, name, &input.role, &hash)
            .await
            .map_err(|e| conflict_as(e, format!("`{email}` already has an account at `{slug}`")))?;
        repo::audit::record(
            &mut tx,
            actor,
            "user.create",
            Some(&email),
            json!({ "role": input.role }),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedUser {
            user_id: user.user_id,
            email,
            role: user.role,
            tenant: Some(slug),
        })
    }

    /// Creates an API key of `scope` (`tenant` needs a slug).
    pub async fn create_api_key(
        &self,
        actor: &str,
        scope: KeyScope,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<CreatedKey, PlatformError> {
        let new = api_key::generate(scope);
        match (scope, tenant) {
            (KeyScope::Tenant, Some(slug)) => {
                let mut tx = self.tenant_tx(slug).await?;
                let key = repo::api_keys::create(&mut tx, name, &new.prefix, &new.hash).await?;
                repo::audit::record(
                    &mut tx,
                    actor,
                    "apikey.create",
                    Some(&new.prefix),
                    json!({ "name": name }),
                )
                .await?;
                tx.commit().await?;
                Ok(CreatedKey {
                    key_id: key.key_id,
                    scope,
                    tenant: Some(slug.to_string()),
                    prefix: new.prefix,
                    key: new.secret.expose_secret().to_string(),
                })
            }
            (KeyScope::Tenant, None) => Err(PlatformError::Invalid(
                "a tenant key needs a tenant slug".into(),
            )),
            (_, Some(_)) => Err(PlatformError::Invalid(
                "platform and service keys belong to no tenant".into(),
            )),
            (_, None) => {
                let mut tx = self.db.platform().await?;
                let key = repo::platform::create_key(&mut tx, scope, name, &new.prefix, &new.hash)
                    .await?;
                repo::platform::audit(
                    &mut tx,
                    actor,
                    "apikey.create",
                    None,
                    json!({ "scope": scope.as_str(), "prefix": new.prefix, "name": name }),
                )
                .await?;
                tx.commit().await.map_err(StorageError::from)?;
                Ok(CreatedKey {
                    key_id: key.key_id,
                    scope,
                    tenant: None,
                    prefix: new.prefix,
                    key: new.secret.expose_secret().to_string(),
                })
            }
        }
    }

    /// Seals and stores a tenant's vendor credential.
    pub async fn set_credential(
        &self,
        actor: &str,
        slug: &str,
        input: SetCredential,
    ) -> Result<CredentialSummary, PlatformError> {
        let provider = input.provider.trim().to_ascii_lowercase();
        if !repo::credentials::PROVIDERS.contains(&provider.as_str()) {
            return Err(PlatformError::Invalid(format!(
                "provider must be one of {}, not `{provider}`",
                repo::credentials::PROVIDERS.join(", ")
            )));
        }
        let secret = input.secret.expose_secret().trim();
        if secret.len() < 8 {
            return Err(PlatformError::Invalid(
                "the secret is too short to be a real key".into(),
            ));
        }
        if provider == "twilio" {
            let sid_ok = input.public_id.as_deref().is_some_and(|s| {
                s.len() == 34
                    && s.starts_with("AC")
                    && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !sid_ok {
                return Err(PlatformError::Invalid(
                    "Twilio credentials need the account's AccountSid (AC + 32 hex digits) as public id".into(),
                ));
            }
        }
        let tail: Vec<char> = secret.chars().rev().take(4).collect();
        let hint = format!("…{}", tail.iter().rev().collect::<String>());
        let mut tx = self.tenant_tx(slug).await?;
        let sealed = self.keyring.seal(
            tx.customer_id(),
            &provider,
            &SecretString::from(secret.to_string()),
        )?;
        let summary = repo::credentials::upsert(
            &mut tx,
            &provider,
            input.public_id.as_deref(),
            &serde_json::Value::Object(input.settings),
            &sealed,
            &hint,
        )
        .await?;
        repo::audit::record(
            &mut tx,
            actor,
            "credentials.set",
            Some(&provider),
            json!({ "hint": hint }),
        )
        .await?;
        tx.commit().await?;
        Ok(summary)
    }

    /// Opens a tenant's credential (for the code that calls the vendor).
    pub async fn open_credential(
        &self,
        customer: CustomerId,
        provider: &str,
    ) -> Result<Option<(CredentialSummary, SecretString)>, PlatformError> {
        let mut tx = self.db.tenant(customer).await?;
        let stored = repo::credentials::get(&mut tx, provider).await?;
        tx.commit().await?;
        match stored {
            None => Ok(None),
            Some(c) => {
                let secret = self.keyring.open(customer, provider, &c.sealed)?;
                Ok(Some((c.summary, secret)))
            }
        }
    }

    /// Re-seals every credential not under the current master key version.
    /// Safe to re-run; each credential is re-sealed in its own transaction.
    pub async fn rotate_keys(&self, actor: &str) -> Result<usize, PlatformError> {
        let version = self.keyring.current_version();
        let pending = directory::credentials_to_rotate(&self.db, version).await?;
        let total = pending.len();
        let mut done = 0;
        for (customer, provider) in pending {
            let mut tx = self.db.tenant(customer).await?;
            let Some(stored) = repo::credentials::get(&mut tx, &provider).await? else {
                continue;
            };
            let secret = self.keyring.open(customer, &provider, &stored.sealed)?;
            let sealed = self.keyring.seal(customer, &provider, &secret)?;
            repo::credentials::reseal(&mut tx, &provider, &sealed).await?;
            repo::audit::record(
                &mut tx,
                actor,
                "keys.rotate",
                Some(&provider),
                json!({ "from": stored.sealed.key_version, "to": version }),
            )
            .await?;
            tx.commit().await?;
            done += 1;
            tracing::info!(done, total, "re-sealed credential");
        }
        self.platform_audit(
            actor,
            "keys.rotate",
            None,
            json!({ "resealed": done, "version": version }),
        )
        .await?;
        Ok(done)
    }
}

async fn assign_in(tx: &mut TenantTx, e164: &str) -> Result<PhoneNumber, PlatformError> {
    repo::numbers::assign(tx, e164, None, None)
        .await
        .map_err(|e| conflict_as(e, format!("{e164} is already assigned to a tenant")))
}

fn conflict_as(error: StorageError, message: String) -> PlatformError {
    match error {
        StorageError::Conflict(_) => PlatformError::Conflict(message),
        other => other.into(),
    }
}

fn valid_slug(slug: &str) -> bool {
    (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
}
