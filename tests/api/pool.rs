//! Pooled connections never carry a tenant context from one use to the next.

use switchboard::db::StorageError;

use crate::helpers::TestDb;

async fn pid_of(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pid")
}

async fn visible_slugs(tx: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT slug FROM customers ORDER BY slug")
        .fetch_all(tx)
        .await
        .expect("select customers")
}

#[tokio::test]
async fn one_connection_serves_a_then_b_then_nobody_without_leaking() {
    let tdb = TestDb::new().await;
    let a = tdb.tenant("pool-a", "+15550000001").await;
    let b = tdb.tenant("pool-b", "+15550000002").await;
    let db = tdb.app_pool(1).await;

    // Tenant A, committed.
    let mut tx = db.tenant(a).await.expect("tx a");
    let pid = pid_of(tx.conn()).await;
    assert_eq!(visible_slugs(tx.conn()).await, vec!["pool-a".to_string()]);
    tx.commit().await.expect("commit a");

    // Tenant B on the same physical connection sees only B.
    let mut tx = db.tenant(b).await.expect("tx b");
    assert_eq!(
        pid_of(tx.conn()).await,
        pid,
        "pool of one reuses the connection"
    );
    assert_eq!(visible_slugs(tx.conn()).await, vec!["pool-b".to_string()]);
    // Dropped without commit: rolled back, context gone with it.
    drop(tx);

    // No tenant: the setting did not survive either transaction.
    let mut tx = db.platform().await.expect("platform tx");
    assert_eq!(pid_of(&mut tx).await, pid);
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.customer_id', true)")
            .fetch_one(&mut *tx)
            .await
            .expect("setting");
    assert!(
        setting.as_deref().unwrap_or("").is_empty(),
        "context leaked into a later use: {setting:?}"
    );
    assert!(
        visible_slugs(&mut tx).await.is_empty(),
        "no-tenant use saw tenants"
    );
    let write = sqlx::query(
        "INSERT INTO caller_profiles (customer_id, user_id) VALUES ($1, '+15551234567')",
    )
    .bind(a)
    .execute(&mut *tx)
    .await;
    let error = StorageError::from(write.expect_err("write without tenant must fail"));
    assert!(
        matches!(error, StorageError::TenantViolation),
        "got {error:?}"
    );
    drop(tx);

    // And back to A: still only A.
    let mut tx = db.tenant(a).await.expect("tx a again");
    assert_eq!(visible_slugs(tx.conn()).await, vec!["pool-a".to_string()]);
    tx.commit().await.expect("commit");

    db.close().await;
    tdb.close().await;
}
