//! First-run bootstrap: creates the owner and application roles and the
//! database, connected as a role that may create roles. Idempotent and safe
//! to race (parallel test binaries do).

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::{StorageError, APP_ROLE, OWNER_ROLE};

/// Advisory lock key held while bootstrapping ("sb-boot" in ASCII).
const BOOTSTRAP_LOCK: i64 = 0x0073_622d_626f_6f74;

/// A login role to create, with its optional password.
pub struct RoleLogin {
    /// Role name (must be [`OWNER_ROLE`] or [`APP_ROLE`]).
    pub role: String,
    /// Password to set, when the URL carried one.
    pub password: Option<SecretString>,
}

/// Ensures both roles exist with safe attributes and `database` exists,
/// owned by the owner role, with CONNECT granted to the application role only.
pub async fn ensure_roles_and_database(
    admin: &PgConnectOptions,
    owner: &RoleLogin,
    app: &RoleLogin,
    database: &str,
) -> Result<(), StorageError> {
    if owner.role != OWNER_ROLE || app.role != APP_ROLE {
        return Err(StorageError::Invalid(format!(
            "the owner URL must use role `{OWNER_ROLE}` and the application URL role `{APP_ROLE}` \
             (got `{}` and `{}`): the migrations grant privileges to those names",
            owner.role, app.role
        )));
    }
    let mut conn = admin.connect().await?;
    // Role DDL is cluster-wide and races badly ("tuple concurrently
    // updated"); serialise bootstraps across processes. The session lock
    // ends with the connection at the latest.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut conn)
        .await?;
    ensure_role(
        &mut conn,
        owner,
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS",
    )
    .await?;
    ensure_role(
        &mut conn,
        app,
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT",
    )
    .await?;

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let create = format!(
            "CREATE DATABASE {} OWNER {OWNER_ROLE}",
            quote_ident(database)
        );
        ignore_duplicate(sqlx::query(&create).execute(&mut conn).await)?;
        tracing::info!(database, "created database");
    }
    for statement in [
        format!(
            "ALTER DATABASE {} OWNER TO {OWNER_ROLE}",
            quote_ident(database)
        ),
        format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC",
            quote_ident(database)
        ),
        format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {OWNER_ROLE}, {APP_ROLE}",
            quote_ident(database)
        ),
    ] {
        sqlx::query(&statement).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}

async fn ensure_role(
    conn: &mut PgConnection,
    login: &RoleLogin,
    attributes: &str,
) -> Result<(), StorageError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&login.role)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        let create = format!("CREATE ROLE {}", quote_ident(&login.role));
        ignore_duplicate(sqlx::query(&create).execute(&mut *conn).await)?;
        tracing::info!(role = %login.role, "created database role");
    }
    sqlx::query(&format!(
        "ALTER ROLE {} {attributes}",
        quote_ident(&login.role)
    ))
    .execute(&mut *conn)
    .await?;
    if let Some(password) = &login.password {
        // format() quotes the literal server-side; the password never
        // appears in our own SQL text or logs.
        let statement: String =
            sqlx::query_scalar("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)")
                .bind(&login.role)
                .bind(password.expose_secret())
                .fetch_one(&mut *conn)
                .await?;
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Concurrent bootstraps race on CREATE: losing the race is success.
fn ignore_duplicate(
    result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
) -> Result<(), StorageError> {
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db))
            if matches!(
                db.code().as_deref(),
                Some("42710") | Some("42P04") | Some("23505")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
