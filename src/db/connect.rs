//! Turns settings into database connections: a configured server, or the
//! private cluster under the data directory (zero-configuration first run).

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use super::bootstrap::{self, RoleLogin};
use super::embedded::{EmbeddedError, EmbeddedPostgres};
use super::{migrate, Db, StorageError, APP_ROLE, OWNER_ROLE};
use crate::configuration::Settings;

/// Name of the database inside the private cluster.
pub const PRIVATE_DATABASE: &str = "switchboard";

/// Failure to reach or prepare the database.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The private cluster could not be started.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The database refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A configured URL is malformed.
    #[error("{0}")]
    BadUrl(String),
}

/// Everything needed to connect as each of the three roles.
pub struct DatabaseTarget {
    /// The application role (the server's pool).
    pub app: PgConnectOptions,
    /// The owner role (migrations).
    pub owner: PgConnectOptions,
    /// A role that may create roles and databases (bootstrap), if known.
    admin: Option<PgConnectOptions>,
    /// Role logins to bootstrap, with the passwords their URLs carried.
    owner_login: RoleLogin,
    app_login: RoleLogin,
    /// Database name all roles use.
    database: String,
    /// The private cluster, when Switchboard runs its own.
    cluster: Option<EmbeddedPostgres>,
}

impl DatabaseTarget {
    /// Resolves connection options, starting the private cluster when no
    /// database URL is configured.
    pub async fn resolve(settings: &Settings) -> Result<Self, SetupError> {
        match (&settings.database.url, &settings.database.owner_url) {
            (Some(app_url), Some(owner_url)) => {
                let (app, app_login) = parse_url("database.url", app_url)?;
                let (owner, owner_login) = parse_url("database.owner_url", owner_url)?;
                let admin = match &settings.database.admin_url {
                    Some(url) => Some(parse_url("database.admin_url", url)?.0),
                    None => None,
                };
                let database = app.get_database().unwrap_or("postgres").to_string();
                if owner.get_database().unwrap_or("postgres") != database {
                    return Err(SetupError::BadUrl(
                        "database.url and database.owner_url must name the same database".into(),
                    ));
                }
                Ok(Self {
                    app,
                    owner,
                    admin,
                    owner_login,
                    app_login,
                    database,
                    cluster: None,
                })
            }
            _ => {
                let dir = settings.data_dir.join("postgres");
                let cluster =
                    EmbeddedPostgres::start(&dir, settings.database.postgres_bin_dir.as_deref())
                        .await?;
                Ok(Self {
                    app: cluster.connect_options(APP_ROLE, PRIVATE_DATABASE),
                    owner: cluster.connect_options(OWNER_ROLE, PRIVATE_DATABASE),
                    admin: Some(cluster.connect_options(EmbeddedPostgres::SUPERUSER, "postgres")),
                    owner_login: RoleLogin {
                        role: OWNER_ROLE.into(),
                        password: None,
                    },
                    app_login: RoleLogin {
                        role: APP_ROLE.into(),
                        password: None,
                    },
                    database: PRIVATE_DATABASE.into(),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// Creates roles and the database when an admin connection is known.
    pub async fn bootstrap(&self) -> Result<(), SetupError> {
        if let Some(admin) = &self.admin {
            bootstrap::ensure_roles_and_database(
                admin,
                &self.owner_login,
                &self.app_login,
                &self.database,
            )
            .await?;
        }
        Ok(())
    }

    /// Bootstraps, then applies pending migrations as the owner.
    pub async fn migrate(&self) -> Result<usize, SetupError> {
        self.bootstrap().await?;
        Ok(migrate::run(&self.owner).await?)
    }

    /// Connects the application role's pool (and checks the role is safe).
    pub async fn connect_app(&self, max_connections: u32) -> Result<Db, SetupError> {
        Ok(Db::connect(self.app.clone(), max_connections).await?)
    }

    /// Stops the private cluster if this process started it.
    pub async fn shutdown(self) -> Result<(), SetupError> {
        if let Some(cluster) = self.cluster {
            cluster.stop().await?;
        }
        Ok(())
    }
}

fn parse_url(key: &str, url: &SecretString) -> Result<(PgConnectOptions, RoleLogin), SetupError> {
    let text = url.expose_secret();
    let parsed = url::Url::parse(text)
        .map_err(|e| SetupError::BadUrl(format!("{key} is not a valid URL: {e}")))?;
    let options = PgConnectOptions::from_str(text)
        .map_err(|e| SetupError::BadUrl(format!("{key} is not a valid PostgreSQL URL: {e}")))?;
    let role = options.get_username().to_string();
    let password = parsed.password().map(|p| {
        SecretString::from(
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned(),
        )
    });
    Ok((options, RoleLogin { role, password }))
}
