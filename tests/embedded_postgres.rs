//! The private PostgreSQL cluster: first-run initialisation, adoption of a running
//! server by a second `start`, stop, restart, and recovery from a stale pid file.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::{Connection, PgConnection};
use switchboard::db::embedded::EmbeddedPostgres;

/// A fresh directory under /tmp; on drop, any server left running in it is stopped
/// and the directory is removed.
struct ScratchDir {
    /// The directory.
    path: PathBuf,
}

impl ScratchDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let path = PathBuf::from(format!(
                "/tmp/switchboard-test-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Self { path },
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => panic!("cannot create {}: {error}", path.display()),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        stop_leftover_server(&self.path.join("pg/data"));
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {error}", self.path.display());
        }
    }
}

/// Shuts down (immediate mode, waiting) a server that a failed assertion left running.
fn stop_leftover_server(data: &Path) {
    let Some(pid) = postmaster_pid(data) else {
        return;
    };
    if kill(pid, None).is_err() {
        return;
    }
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    let mut pg_ctl =
        std::process::Command::new(format!("/usr/lib/postgresql/{}/bin/pg_ctl", version.trim()));
    pg_ctl
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"]);
    if let Ok(meta) = std::fs::metadata(data) {
        // pg_ctl refuses to run as root; run it as the cluster's owner.
        pg_ctl.uid(meta.uid()).gid(meta.gid());
    }
    let stopped = pg_ctl.output().is_ok_and(|output| output.status.success());
    if !stopped {
        let _ = kill(pid, Signal::SIGQUIT);
    }
}

/// The postmaster's pid from `postmaster.pid`, if the file exists.
fn postmaster_pid(data: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
}

/// Shows the module's progress messages in the test output.
fn init_logging() {
    // Fails only when another test already installed the subscriber.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

/// Connects as the superuser to `postgres` and runs `SELECT 1`.
async fn select_one(pg: &EmbeddedPostgres) -> Result<i32, sqlx::Error> {
    let options = pg.connect_options(EmbeddedPostgres::SUPERUSER, "postgres");
    let mut connection = PgConnection::connect_with(&options).await?;
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    Ok(one)
}

#[tokio::test]
async fn initialises_adopts_stops_and_restarts() {
    init_logging();
    let scratch = ScratchDir::new("lifecycle");
    // `start` creates the directory itself.
    let dir = scratch.path.join("pg");

    let first = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("first start initialises and starts the cluster");
    assert!(first.started_server());
    assert_eq!(first.data_dir(), dir.join("data"));
    assert!(first.data_dir().join("PG_VERSION").is_file());
    assert!(dir.join("postgres.log").is_file());
    assert_eq!(select_one(&first).await.expect("SELECT 1"), 1);

    let options = first.connect_options(EmbeddedPostgres::SUPERUSER, "postgres");
    let mut connection = PgConnection::connect_with(&options)
        .await
        .expect("superuser connection");
    let (role, superuser, listen): (String, bool, String) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, current_setting('listen_addresses')
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut connection)
    .await
    .expect("role and settings query");
    assert_eq!(role, EmbeddedPostgres::SUPERUSER);
    assert!(superuser);
    assert_eq!(listen, "", "the server must not listen on TCP");
    connection.close().await.expect("close");

    // A second start while the server runs adopts it and leaves it running on stop.
    let second = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("second start adopts the running server");
    assert!(!second.started_server());
    assert_eq!(select_one(&second).await.expect("SELECT 1 via second"), 1);
    second.stop().await.expect("stop on the adopting value");
    assert_eq!(select_one(&first).await.expect("server still running"), 1);

    first.stop().await.expect("stop");
    assert!(
        PgConnection::connect_with(&options).await.is_err(),
        "the server must be stopped"
    );
    assert!(postmaster_pid(&dir.join("data")).is_none());

    // Restart of the existing cluster.
    let again = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("restart of the existing cluster");
    assert!(again.started_server());
    assert_eq!(select_one(&again).await.expect("SELECT 1 after restart"), 1);
    again.stop().await.expect("stop after restart");

    let path = scratch.path.clone();
    drop(scratch);
    assert!(!path.exists());
}

#[tokio::test]
async fn starts_after_a_crash_left_a_stale_pid_file() {
    init_logging();
    let scratch = ScratchDir::new("crash");
    let dir = scratch.path.join("pg");
    let data = dir.join("data");

    let crashed = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("first start");
    let pid = postmaster_pid(&data).expect("postmaster.pid while running");
    kill(pid, Signal::SIGKILL).expect("kill the postmaster");
    for _ in 0..100 {
        if kill(pid, None).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kill(pid, None).is_err(), "the postmaster must be gone");
    assert_eq!(postmaster_pid(&data), Some(pid), "the pid file is stale");
    drop(crashed);

    let recovered = EmbeddedPostgres::start(&dir, None)
        .await
        .expect("start despite the stale pid file");
    assert!(recovered.started_server());
    assert_eq!(select_one(&recovered).await.expect("SELECT 1"), 1);
    recovered.stop().await.expect("stop");
}
