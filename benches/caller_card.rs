//! Latency of the caller card read at call start (`memory::load_card` in a
//! `TenantTx`, as the application role under row-level security) with
//! 1,000,000 caller-memory rows over 100 tenants. The target is a
//! p99 of 5 ms, so this prints percentiles, not criterion means.
//!
//! Run: `cargo bench -p switchboard --bench caller_card`.
//!
//! It creates the database `switchboard_bench_card` through the admin URL
//! (`SWITCHBOARD_BENCH_ADMIN_URL`, else `SWITCHBOARD_TEST_ADMIN_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`) with the app's own
//! bootstrap and migrations, seeds it once as the owner role with
//! server-side SQL (`caller_card_seed.sql`, about a minute), and reuses it
//! on later runs while its seed marker (a comment on the database naming
//! the seed version, the sizes and the schema version) still matches.
//! Drop it with `DROP DATABASE switchboard_bench_card` (about 400 MB).
//!
//! Knobs: `SWITCHBOARD_BENCH_CALLS` (measured reads per phase, default
//! 20,000), `SWITCHBOARD_BENCH_CLIENTS` (concurrent clients, default 4),
//! `SWITCHBOARD_BENCH_RESEED=1` (drop and seed again).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does nothing.

// A benchmark measures wall time by definition; application code never does.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use switchboard::configuration::Settings;
use switchboard::db::connect::DatabaseTarget;
use switchboard::db::{migrate, CustomerId, Db, APP_ROLE, OWNER_ROLE};
use switchboard::memory::load_card;
use uuid::Uuid;

/// The dedicated database (not `sbt_*`, so test sweeps leave it alone).
const DATABASE: &str = "switchboard_bench_card";
/// Tenants seeded.
const TENANTS: i64 = 100;
/// Caller-memory rows seeded (at least this many; the last caller's rows
/// may overshoot by a few).
const MEMORY_ROWS: i64 = 1_000_000;
/// Callers drawn before the cut at [`MEMORY_ROWS`] (about 43,000 are kept).
const CANDIDATES: i64 = 80_000;
/// Most calls one caller gets.
const MAX_CALLS: i64 = 1_000;
/// Bump when `caller_card_seed.sql` changes shape: the database is seeded
/// again.
const SEED_VERSION: u32 = 1;
/// The seeding statements, `-- step:` separated.
const SEED_SQL: &str = include_str!("caller_card_seed.sql");
/// Summaries per card, as the call driver asks for.
const RECENT: i64 = 3;
/// Reads before any measurement (connections, caches, plans).
const WARM_UP: usize = 2_000;
/// The tables whose rows count as caller memory.
const MEMORY_TABLES: [&str; 6] = [
    "caller_profiles",
    "call_summaries",
    "caller_facts",
    "caller_memories",
    "call_personality",
    "caller_personality",
];

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and must not seed a million rows.
    if !std::env::args().any(|a| a == "--bench") {
        println!("caller_card: skipped (run `cargo bench -p switchboard --bench caller_card`)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("caller_card: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caller_card: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One (tenant, caller) pair and the calls the caller made.
struct Caller {
    customer_id: CustomerId,
    user_id: String,
    calls: i32,
}

/// Latencies of one read, in milliseconds.
#[derive(Clone, Copy)]
struct Sample {
    /// `load_card` alone: the one statement and its decoding.
    query: f64,
    /// Begin the tenant transaction, load the card, commit: what the
    /// memory service does at call start.
    total: f64,
}

async fn run() -> Result<()> {
    let calls = env_number("SWITCHBOARD_BENCH_CALLS", 20_000)?;
    let clients = env_number("SWITCHBOARD_BENCH_CLIENTS", 4)?.max(1);
    let reseed = std::env::var("SWITCHBOARD_BENCH_RESEED").is_ok_and(|v| v == "1");
    let admin_url = std::env::var("SWITCHBOARD_BENCH_ADMIN_URL")
        .or_else(|_| std::env::var("SWITCHBOARD_TEST_ADMIN_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    println!("load average before: {}", load_average());

    let schema = migrate::known_versions().last().copied().unwrap_or(0);
    let marker = format!(
        "switchboard caller-card bench seed v{SEED_VERSION}: tenants={TENANTS} \
         memory_rows={MEMORY_ROWS} max_calls={MAX_CALLS} schema={schema}"
    );
    let seeded = prepare_database(&admin_url, &marker, reseed).await?;
    let settings = bench_settings(&admin_url)?;
    let target = DatabaseTarget::resolve(&settings)
        .await
        .context("resolving the bench database")?;
    target.migrate().await.context("migrating")?;
    let mut owner = target.owner.connect().await.context("owner connection")?;
    if !seeded {
        seed(&mut owner, &marker).await?;
    }

    print_row_counts(&mut owner).await?;
    let mut callers: Vec<Caller> = sqlx::query_as::<_, (Uuid, String, i32)>(
        "SELECT customer_id, user_id, call_count FROM caller_profiles ORDER BY 1, 2",
    )
    .fetch_all(&mut owner)
    .await?
    .into_iter()
    .map(|(id, user_id, calls)| Caller {
        customer_id: CustomerId(id),
        user_id,
        calls,
    })
    .collect();
    owner.close().await?;
    if callers.is_empty() {
        bail!("the bench database has no callers");
    }
    callers.sort_by_key(|c| std::cmp::Reverse(c.calls));
    let heavy = (callers.len() / 100).max(1);
    println!(
        "callers: {} (heaviest {} calls; the top 1 % ({heavy}) have {} or more)",
        callers.len(),
        callers[0].calls,
        callers[heavy - 1].calls
    );

    let db = target.connect_app(clients as u32).await?;
    check_cards(&db, &callers).await?;
    let mut rng = StdRng::seed_from_u64(6);
    let warm: Vec<usize> = (0..WARM_UP)
        .map(|_| rng.gen_range(0..callers.len()))
        .collect();
    read_cards(&db, &callers, &warm, true).await?;

    println!(
        "\ncaller card at call start (recent = {RECENT}), application role, {} clients max",
        clients
    );
    println!(
        "{:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "ms", "reads", "p50", "p90", "p99", "p99.9", "max"
    );

    let picks: Vec<usize> = (0..calls)
        .map(|_| rng.gen_range(0..callers.len()))
        .collect();
    let samples = read_cards(&db, &callers, &picks, true).await?;
    report("1 client, random callers", samples);

    let heavy_picks: Vec<usize> = (0..(calls / 10).max(1))
        .map(|_| rng.gen_range(0..heavy))
        .collect();
    let samples = read_cards(&db, &callers, &heavy_picks, true).await?;
    report("1 client, heaviest 1 % of callers", samples);

    let unknown: Vec<Caller> = (0..(calls / 10).max(1))
        .map(|i| Caller {
            customer_id: callers[rng.gen_range(0..callers.len())].customer_id,
            user_id: format!("+1999{:07}", i),
            calls: 0,
        })
        .collect();
    let all: Vec<usize> = (0..unknown.len()).collect();
    let samples = read_cards(&db, &unknown, &all, false).await?;
    report("1 client, unknown numbers (no card)", samples);

    let per_client: Vec<Vec<usize>> = (0..clients)
        .map(|_| {
            (0..calls / clients)
                .map(|_| rng.gen_range(0..callers.len()))
                .collect()
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let callers = std::sync::Arc::new(callers);
    let started = Instant::now();
    for picks in per_client {
        let db = db.clone();
        let callers = callers.clone();
        tasks.spawn(async move { read_cards(&db, &callers, &picks, true).await });
    }
    let mut samples = Vec::with_capacity(calls);
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined.context("client task")??);
    }
    let elapsed = started.elapsed();
    let reads = samples.len();
    report(&format!("{clients} clients, random callers"), samples);
    println!(
        "{clients} clients: {:.0} cards/s",
        reads as f64 / elapsed.as_secs_f64()
    );
    db.close().await;
    println!("load average after: {}", load_average());
    Ok(())
}

/// Drops the bench database unless it carries `marker`; true when it does
/// (already seeded with this shape).
async fn prepare_database(admin_url: &str, marker: &str, reseed: bool) -> Result<bool> {
    let admin = PgConnectOptions::from_str(admin_url).context("admin URL")?;
    let mut conn = admin.connect().await.context("admin connection")?;
    let found: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(DATABASE)
    .fetch_optional(&mut conn)
    .await?;
    let seeded = match &found {
        Some(Some(comment)) => comment == marker && !reseed,
        _ => false,
    };
    if found.is_some() && !seeded {
        println!("dropping {DATABASE} (other seed or none)");
        sqlx::query(&format!("DROP DATABASE {DATABASE} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    if seeded {
        println!("reusing {DATABASE} ({marker})");
    }
    Ok(seeded)
}

/// Settings for the bench database: the owner and application roles on the
/// admin URL's server, as the integration tests build them.
fn bench_settings(admin_url: &str) -> Result<Settings> {
    let url = url::Url::parse(admin_url).context("admin URL")?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    let data_dir = std::env::temp_dir().join("switchboard-bench-card");
    let env: BTreeMap<String, String> = [
        (
            "SWITCHBOARD_DATABASE_URL",
            format!("postgres://{APP_ROLE}@{host}:{port}/{DATABASE}"),
        ),
        (
            "SWITCHBOARD_DATABASE_OWNER_URL",
            format!("postgres://{OWNER_ROLE}@{host}:{port}/{DATABASE}"),
        ),
        ("SWITCHBOARD_DATABASE_ADMIN_URL", admin_url.to_string()),
        ("SWITCHBOARD_DATA_DIR", data_dir.display().to_string()),
        ("SWITCHBOARD_LOG_LEVEL", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::load_from(None, &env).context("bench settings")
}

/// Runs the seed statements as the owner, vacuums and analyses, then marks
/// the database as seeded.
async fn seed(owner: &mut PgConnection, marker: &str) -> Result<()> {
    println!("seeding {DATABASE}: {TENANTS} tenants, {MEMORY_ROWS} memory rows");
    let started = Instant::now();
    sqlx::raw_sql("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        .execute(&mut *owner)
        .await?;
    for step in SEED_SQL.split("\n-- step: ").skip(1) {
        let (label, statement) = step.split_once('\n').unwrap_or((step, ""));
        let statement = statement
            .replace(":tenants", &TENANTS.to_string())
            .replace(":candidates", &CANDIDATES.to_string())
            .replace(":memory_rows", &MEMORY_ROWS.to_string())
            .replace(":max_calls", &MAX_CALLS.to_string());
        let done = sqlx::raw_sql(&statement)
            .execute(&mut *owner)
            .await
            .with_context(|| format!("seed step `{label}`"))?;
        println!(
            "  [{:>5.1} s] {label}: {} rows",
            started.elapsed().as_secs_f64(),
            done.rows_affected()
        );
    }
    let tables = [&MEMORY_TABLES[..], &["calls", "customers"]].concat();
    sqlx::raw_sql(&format!("VACUUM (ANALYZE) {}", tables.join(", ")))
        .execute(&mut *owner)
        .await
        .context("vacuum")?;
    println!(
        "  [{:>5.1} s] vacuumed and analysed",
        started.elapsed().as_secs_f64()
    );
    sqlx::raw_sql(&format!(
        "COMMENT ON DATABASE {DATABASE} IS '{}'",
        marker.replace('\'', "''")
    ))
    .execute(&mut *owner)
    .await?;
    Ok(())
}

async fn print_row_counts(owner: &mut PgConnection) -> Result<()> {
    let mut total = 0i64;
    for table in MEMORY_TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *owner)
            .await?;
        total += n;
        println!("  {table:<20} {n:>9}");
    }
    println!("  {:<20} {total:>9}", "memory rows");
    for table in ["calls", "customers"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *owner)
            .await?;
        println!("  {table:<20} {n:>9} (not counted)");
    }
    let (size, buffers, version): (String, String, String) = sqlx::query_as(
        "SELECT pg_size_pretty(pg_database_size(current_database())),
                current_setting('shared_buffers'), current_setting('server_version')",
    )
    .fetch_one(&mut *owner)
    .await?;
    println!("database {size}, shared_buffers {buffers}, PostgreSQL {version}");
    Ok(())
}

/// The heaviest caller's card, read as the application role, matches its
/// seed (the bench measures real cards, not empty answers).
async fn check_cards(db: &Db, callers: &[Caller]) -> Result<()> {
    let caller = &callers[0];
    let mut tx = db.tenant(caller.customer_id).await?;
    let card = load_card(&mut tx, &caller.user_id, RECENT).await?;
    tx.commit().await?;
    let Some(card) = card else {
        bail!("no card for {}", caller.user_id);
    };
    if card.call_count != caller.calls || card.recent_calls.len() as i64 != RECENT {
        bail!("the heaviest caller's card does not match its seed");
    }
    println!(
        "heaviest caller's card: {} summaries, {} open follow-ups, {} facts",
        card.recent_calls.len(),
        card.follow_ups.len(),
        card.facts.len()
    );
    Ok(())
}

/// Reads the cards of `callers[i]` for each pick, one after another, and
/// times each read. `known`: every read must find a card (else none may).
async fn read_cards(
    db: &Db,
    callers: &[Caller],
    picks: &[usize],
    known: bool,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(picks.len());
    for &i in picks {
        let caller = &callers[i];
        let begun = Instant::now();
        let mut tx = db.tenant(caller.customer_id).await?;
        let asked = Instant::now();
        let card = load_card(&mut tx, &caller.user_id, RECENT).await?;
        let answered = Instant::now();
        tx.commit().await?;
        let ended = Instant::now();
        if card.is_some() != known {
            bail!("card for {} found: {}", caller.user_id, card.is_some());
        }
        samples.push(Sample {
            query: ms(answered - asked),
            total: ms(ended - begun),
        });
    }
    Ok(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints percentiles of the query alone and of the whole tenant
/// transaction.
fn report(label: &str, samples: Vec<Sample>) {
    println!("{label}");
    for (part, mut values) in [
        (
            "card query",
            samples.iter().map(|s| s.query).collect::<Vec<_>>(),
        ),
        (
            "tenant tx + card",
            samples.iter().map(|s| s.total).collect::<Vec<_>>(),
        ),
    ] {
        if values.is_empty() {
            continue;
        }
        values.sort_by(|a, b| a.total_cmp(b));
        // Nearest rank: the smallest value with at least p % of the
        // samples at or below it.
        let pct = |p: f64| {
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        println!(
            "  {part:<20} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            values.len(),
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9),
            pct(100.0)
        );
    }
}

fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a whole number")),
        Err(_) => Ok(default),
    }
}

/// The 1, 5 and 15 minute load averages (Linux), for the record.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
