//! Catalog checks: the schema itself keeps the isolation rules, so a
//! migration that forgets RLS, a policy, `security_invoker` or a tenant-led
//! key fails here, whatever the application code does.

use crate::helpers::TestDb;

/// SECURITY DEFINER functions allowed to exist: the platform directory and
/// the job queue's claim. Adding one means reviewing it: narrow,
/// identifiers only, search_path set.
const ALLOWED_DEFINER_FUNCTIONS: &[&str] = &[
    "platform_authenticate_tenant_key",
    // Jobs: claims due jobs across tenants, returns (customer_id, job_id).
    "platform_claim_due_jobs",
    "platform_credentials_to_rotate",
    "platform_customer_by_slug",
    "platform_customer_directory",
    // Crash recovery: tenant ids with calls still open, nothing else.
    "platform_customers_with_open_calls",
    // Retention: tenant ids with a transcript retention period, nothing else.
    "platform_customers_with_retention",
    "platform_resolve_number",
];

/// Unique indexes on tenant tables that deliberately do not lead with
/// customer_id: platform-wide invariants written only by platform operations.
const ALLOWED_GLOBAL_UNIQUE: &[&str] = &["customers_slug_key", "phone_numbers_e164_key"];

/// (name, permissive, command, USING, WITH CHECK) of a policy.
type PolicyRow = (String, String, String, Option<String>, Option<String>);
/// (table, key name, kind, referenced table, first column) of a key.
type KeyRow = (String, String, String, Option<String>, Option<String>);

const EXPECTED_POLICY: &str = "(customer_id = app_customer_id())";

async fn tenant_tables(tdb: &TestDb) -> Vec<String> {
    let mut tx = tdb.db().platform().await.expect("tx");
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'customer_id' AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
         ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("catalog query")
}

/// Every violation of the isolation rules found in the catalog.
pub async fn violations(tdb: &TestDb) -> Vec<String> {
    let mut problems = Vec::new();
    let tables = tenant_tables(tdb).await;
    let mut tx = tdb.db().platform().await.expect("tx");

    for table in &tables {
        let (rls, force): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class
             WHERE oid = ('public.' || quote_ident($1))::regclass",
        )
        .bind(table)
        .fetch_one(&mut *tx)
        .await
        .expect("rls flags");
        if !rls {
            problems.push(format!("{table}: row level security is not enabled"));
        }
        if !force {
            problems.push(format!("{table}: row level security is not forced"));
        }
        let policies: Vec<PolicyRow> = sqlx::query_as(
            "SELECT policyname::text, permissive::text, cmd::text, qual, with_check FROM pg_policies
             WHERE schemaname = 'public' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .expect("policies");
        match policies.as_slice() {
            [] => problems.push(format!("{table}: has no policy")),
            [(name, permissive, cmd, qual, check)] => {
                if permissive != "PERMISSIVE" || cmd != "ALL" {
                    problems.push(format!("{table}: policy {name} is {permissive} for {cmd}"));
                }
                if qual.as_deref() != Some(EXPECTED_POLICY) {
                    problems.push(format!("{table}: policy {name} USING is {qual:?}"));
                }
                if check.as_deref() != Some(EXPECTED_POLICY) {
                    problems.push(format!("{table}: policy {name} WITH CHECK is {check:?}"));
                }
            }
            many => problems.push(format!(
                "{table}: has {} policies, expected one",
                many.len()
            )),
        }
    }

    // Primary keys, unique indexes, and foreign keys between tenant tables
    // lead with customer_id (a key on another column alone would compare
    // rows across tenants). Foreign keys into platform tables such as
    // industry_templates reference shared data and are fine.
    let keys: Vec<KeyRow> = sqlx::query_as(
        "SELECT c.relname::text, i.relname::text,
                CASE WHEN x.indisprimary THEN 'primary key' ELSE 'unique index' END,
                NULL::text,
                (SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum = x.indkey[0])
         FROM pg_index x
         JOIN pg_class c ON c.oid = x.indrelid
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND x.indisunique
         UNION ALL
         SELECT c.relname::text, k.conname::text, 'foreign key', k.confrelid::regclass::text,
                (SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum = k.conkey[1])
         FROM pg_constraint k
         JOIN pg_class c ON c.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND k.contype = 'f'",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("keys");
    for (table, name, kind, referenced, first) in keys {
        let into_platform_table = referenced.as_ref().is_some_and(|r| !tables.contains(r));
        if tables.contains(&table)
            && !into_platform_table
            && first.as_deref() != Some("customer_id")
            && !ALLOWED_GLOBAL_UNIQUE.contains(&name.as_str())
        {
            problems.push(format!(
                "{table}: {kind} {name} leads with {first:?}, not customer_id"
            ));
        }
    }

    // Views must run with the caller's rights, or they bypass RLS.
    let views: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT c.relname::text, c.reloptions::text[] FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("views");
    for (view, options) in views {
        let invoker = options
            .unwrap_or_default()
            .iter()
            .any(|o| o == "security_invoker=true" || o == "security_invoker=on");
        if !invoker {
            problems.push(format!("view {view} lacks security_invoker"));
        }
    }

    // SECURITY DEFINER functions: only the listed ones, each with a pinned
    // search_path so a caller cannot hijack the names it uses.
    let definers: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.proname::text, p.proconfig::text[] FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("definer functions");
    for (function, config) in definers {
        if !ALLOWED_DEFINER_FUNCTIONS.contains(&function.as_str()) {
            problems.push(format!("unlisted SECURITY DEFINER function {function}"));
        }
        let pinned = config
            .unwrap_or_default()
            .iter()
            .any(|c| c.starts_with("search_path="));
        if !pinned {
            problems.push(format!(
                "SECURITY DEFINER function {function} has no search_path"
            ));
        }
    }

    // The application role can never sidestep RLS.
    let (superuser, bypass, owned): (bool, bool, i64) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolbypassrls,
                (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
         FROM pg_roles r WHERE r.rolname = 'switchboard_app'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("role");
    if superuser {
        problems.push("switchboard_app is a superuser".into());
    }
    if bypass {
        problems.push("switchboard_app has BYPASSRLS".into());
    }
    if owned > 0 {
        problems.push(format!("switchboard_app owns {owned} relations"));
    }
    problems
}

#[tokio::test]
async fn the_schema_keeps_every_isolation_rule() {
    let tdb = TestDb::new().await;
    let tables = tenant_tables(&tdb).await;
    assert!(
        tables.len() >= 18,
        "expected the whole product schema under RLS, found {tables:?}"
    );
    let problems = violations(&tdb).await;
    assert!(
        problems.is_empty(),
        "isolation rules broken:\n{}",
        problems.join("\n")
    );
    tdb.close().await;
}

#[tokio::test]
async fn tests_connect_as_the_unprivileged_application_role() {
    let tdb = TestDb::new().await;
    let mut tx = tdb.db().platform().await.expect("tx");
    let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("role");
    assert_eq!(user, "switchboard_app");
    assert!(!superuser && !bypass);
    tdb.close().await;
}

#[tokio::test]
async fn the_server_refuses_a_role_that_could_bypass_rls() {
    let tdb = TestDb::new().await;
    let target = switchboard::db::connect::DatabaseTarget::resolve(&tdb.settings)
        .await
        .expect("resolve");
    // The owner role has BYPASSRLS (it owns the directory functions).
    let refused = switchboard::db::Db::connect(target.owner.clone(), 1).await;
    match refused {
        Err(switchboard::db::StorageError::UnsafeRole(message)) => {
            assert!(message.contains("BYPASSRLS"), "{message}");
        }
        Err(other) => panic!("expected UnsafeRole, got {other:?}"),
        Ok(_) => panic!("connected as the owner role without complaint"),
    }
    tdb.close().await;
}
