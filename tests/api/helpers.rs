//! `spawn_app()` and friends: a fresh database per test, the real server on
//! a free port, and handles for the application role.
//!
//! Only the bootstrap (creating the per-test database and roles) uses the
//! admin URL; every assertion runs through the application role, so
//! row-level security is what is being tested.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use switchboard::configuration::Settings;
use switchboard::crypto::api_key::KeyScope;
use switchboard::db::connect::DatabaseTarget;
use switchboard::db::Db;
use switchboard::platform::{CreateTenant, Platform};
use switchboard::startup::{Application, Runtime};
use tokio::sync::oneshot;

/// Superuser URL used only to create the per-test database and roles.
pub fn admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Host part of the admin URL (`postgres://user@HOST:PORT/db` → `HOST:PORT`).
fn server_address() -> String {
    let url = admin_url();
    let after_at = url
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or("127.0.0.1:5432");
    after_at
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_string()
}

/// The public base URL the test server believes Twilio reaches it at; test
/// requests are signed over URLs under it and sent to the real address.
pub const PUBLIC_URL: &str = "https://switchboard.test";
/// The platform's Twilio AccountSid in tests.
pub const TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
/// The platform's Twilio auth token in tests.
pub const TWILIO_AUTH_TOKEN: &str = "platform-auth-token-for-tests";

/// Settings for a brand-new database.
pub fn test_settings() -> (Settings, String) {
    let (env, database) = test_env();
    let settings = Settings::load_from(None, &env).expect("test settings are valid");
    (settings, database)
}

/// `SWITCHBOARD_*` variables for a brand-new database (for child processes).
pub fn test_env() -> (BTreeMap<String, String>, String) {
    let database = format!("sbt_{}", uuid::Uuid::new_v4().simple());
    let host = server_address();
    let data_dir: PathBuf = std::env::temp_dir().join(format!("switchboard-test-{database}"));
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let env: BTreeMap<String, String> = [
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0".to_string()),
        ("SWITCHBOARD_DATA_DIR", data_dir.display().to_string()),
        ("SWITCHBOARD_LOG_LEVEL", "warn".to_string()),
        ("SWITCHBOARD_SHUTDOWN_GRACE_SECS", "5".to_string()),
        ("SWITCHBOARD_PROVIDERS", "fake".to_string()),
        (
            "SWITCHBOARD_DATABASE_URL",
            format!("postgres://switchboard_app@{host}/{database}"),
        ),
        (
            "SWITCHBOARD_DATABASE_OWNER_URL",
            format!("postgres://switchboard_owner@{host}/{database}"),
        ),
        ("SWITCHBOARD_DATABASE_ADMIN_URL", admin_url()),
        ("SWITCHBOARD_DATABASE_MAX_CONNECTIONS", "5".to_string()),
        ("SWITCHBOARD_MASTER_KEY", key),
        ("SWITCHBOARD_PUBLIC_URL", PUBLIC_URL.to_string()),
        (
            "SWITCHBOARD_TWILIO_ACCOUNT_SID",
            TWILIO_ACCOUNT_SID.to_string(),
        ),
        (
            "SWITCHBOARD_TWILIO_AUTH_TOKEN",
            TWILIO_AUTH_TOKEN.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (env, database)
}

/// A migrated database and the platform operations over it, no server.
pub struct TestDb {
    /// Platform operations (application role).
    pub platform: Platform,
    /// The settings used.
    pub settings: Settings,
    /// Runtime to close at the end.
    runtime: Option<Runtime>,
    /// The per-test database, dropped on close.
    database: String,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> Self {
        let (settings, database) = test_settings();
        let runtime = Runtime::open(&settings).await.expect("database opens");
        Self {
            platform: runtime.platform.clone(),
            settings,
            runtime: Some(runtime),
            database,
        }
    }

    /// The application role's pool.
    pub fn db(&self) -> &Db {
        self.platform.db()
    }

    /// A second application-role pool with exactly `n` connections.
    pub async fn app_pool(&self, n: u32) -> Db {
        let target = DatabaseTarget::resolve(&self.settings)
            .await
            .expect("resolve");
        target.connect_app(n).await.expect("app pool")
    }

    /// Creates a tenant from a slug with one number and returns its id.
    pub async fn tenant(&self, slug: &str, number: &str) -> switchboard::db::CustomerId {
        let details = self
            .platform
            .create_tenant("test", tenant_input(slug, number))
            .await
            .expect("tenant created");
        details.customer.customer_id
    }

    /// Closes the pool and drops the per-test database.
    pub async fn close(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = runtime.close().await;
        }
        drop_database(&self.database).await;
    }
}

/// Drops a per-test database (best effort: a failing test may leave one
/// behind, and `.ci/run` sweeps those).
pub async fn drop_database(database: &str) {
    use sqlx::{ConnectOptions, Connection};
    let Ok(options) = admin_url().parse::<sqlx::postgres::PgConnectOptions>() else {
        return;
    };
    if let Ok(mut conn) = options.connect().await {
        let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::query(&statement).execute(&mut conn).await;
        let _ = conn.close().await;
    }
}

/// A minimal `tenant create` input.
pub fn tenant_input(slug: &str, number: &str) -> CreateTenant {
    CreateTenant {
        slug: slug.to_string(),
        name: format!("Tenant {slug}"),
        template: "insurance".to_string(),
        numbers: vec![number.to_string()],
        agent_name: None,
        greeting: None,
        plan_tier: None,
        monthly_call_limit: None,
        timezone: None,
        transfer_number: None,
        voice_id: None,
        personality: None,
        prohibited_topics: Vec::new(),
    }
}

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// Bound socket address.
    pub addr: SocketAddr,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Platform operations on the same database.
    pub platform: Platform,
    /// Resolves the server's stop future.
    stop: Option<oneshot::Sender<()>>,
    /// The server task.
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The per-test database, dropped on stop.
    database: String,
}

/// Starts the real application on a free port against a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with its settings adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (mut settings, database) = test_settings();
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    let platform = app.state().platform.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://{addr}"),
        addr,
        client: reqwest::Client::new(),
        platform,
        stop: Some(stop),
        task: Some(task),
        database,
    }
}

impl TestApp {
    /// A fresh platform key.
    pub async fn platform_key(&self) -> String {
        self.platform
            .create_api_key("test", KeyScope::Platform, None, "test")
            .await
            .expect("key")
            .key
    }

    /// Asks the server to stop, waits for it, and drops its database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        };
        drop_database(&self.database).await;
        result
    }
}

/// A call's row and its transcript, read as the tenant (application role).
pub async fn call_transcript(
    db: &Db,
    customer: switchboard::db::CustomerId,
    call_sid: &str,
) -> (
    switchboard::repo::calls::Call,
    Vec<switchboard::repo::turns::Turn>,
) {
    // The driver records the end reason after the transcript writer has
    // flushed: wait for it (briefly) so a read right after the simulator
    // hangs up sees every row.
    for _ in 0..100 {
        let (call, turns) = read_transcript(db, customer, call_sid).await;
        if call.end_reason.is_some() {
            return (call, turns);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    read_transcript(db, customer, call_sid).await
}

async fn read_transcript(
    db: &Db,
    customer: switchboard::db::CustomerId,
    call_sid: &str,
) -> (
    switchboard::repo::calls::Call,
    Vec<switchboard::repo::turns::Turn>,
) {
    let mut tx = db.tenant(customer).await.expect("tenant transaction");
    let call = switchboard::repo::calls::get_by_sid(&mut tx, call_sid)
        .await
        .expect("call query")
        .unwrap_or_else(|| panic!("no call row for {call_sid}"));
    let turns = switchboard::repo::turns::list(&mut tx, call.call_id)
        .await
        .expect("transcript query");
    (call, turns)
}

/// Serves `app` on a fresh loopback port (the fake vendors and the fake
/// Twilio): the address and the server task.
pub async fn serve_loopback(
    app: axum::Router,
    what: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

/// A speech clip of `fixtures/audio` as the simulator plays it (`--say`).
pub fn fixture_clip(name: &str) -> Vec<u8> {
    switchboard::callsim::load_ulaw(fixture_path(name)).expect("fixture clip")
}

/// A mu-law clip of `fixtures/audio`, bytes as stored.
pub fn fixture_ulaw(name: &str) -> Vec<u8> {
    media::wav::read_ulaw(fixture_path(name)).expect("fixture")
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(name)
}

/// What the call driver needs for one test call to `customer`, with the
/// fake providers and a logging call control, and a valid call token for
/// `call_sid`.
pub fn driver_context(
    tdb: &TestDb,
    customer: switchboard::db::CustomerId,
    call_sid: &str,
) -> (switchboard::call::driver::CallContext, String) {
    use switchboard::twilio::call_token::CallTokenKey;
    let token_key = CallTokenKey::from_keyring(tdb.platform.keyring()).expect("key");
    let token = token_key
        .issue(
            call_sid,
            customer,
            chrono::Utc::now() + chrono::Duration::seconds(60),
        )
        .expect("token");
    let ctx = switchboard::call::driver::CallContext {
        platform: tdb.platform.clone(),
        providers: std::sync::Arc::new(switchboard::providers::fake::FakeFactory::default()),
        live: std::sync::Arc::new(switchboard::call::registry::LiveCalls::default()),
        shutdown: tokio_util::sync::CancellationToken::new(),
        token_key,
        control: std::sync::Arc::new(switchboard::call::driver::LogOnlyControl),
        endpoint: Default::default(),
        upgrade: Default::default(),
        metrics: Default::default(),
        defaults: Default::default(),
        memory: std::sync::Arc::new(switchboard::memory::InProcessMemoryClient::new(
            switchboard::memory::MemoryService::new(tdb.db().clone()),
            "test",
        )),
    };
    (ctx, token)
}
