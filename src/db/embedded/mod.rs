//! The private PostgreSQL cluster Switchboard runs under its data directory when no URL is set.
//!
//! The cluster uses the PostgreSQL server binaries installed on the machine
//! (Debian: `/usr/lib/postgresql/<major>/bin`) and keeps everything under one
//! directory chosen by the caller:
//!
//! - `<dir>/data`: the cluster itself (PGDATA), created by `initdb` on first start;
//! - `<dir>/run`: the unix socket directory (mode 0700). The server listens on no
//!   TCP address. When the socket path would be longer than the kernel allows,
//!   `/tmp/switchboard-pg-<hash of dir>` is used instead; the name depends on
//!   `<dir>` alone, so every start makes the same choice;
//! - `<dir>/postgres.log`: the server log;
//! - `<dir>/.lock`: held while a process initialises, starts or stops the cluster.
//!
//! `initdb` and `postgres` refuse to run as root, so when Switchboard runs as
//! root the server binaries run as the owner of an existing cluster, else as
//! the `postgres` system user, else as `nobody`.

mod binaries;
mod error;
mod files;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{info, warn};

use binaries::{choose_server_user, discover_binaries, parse_major_version};
use files::{
    chown, create_dir, lock_directory, log_tail, prepare_layout, prepare_root,
    read_cluster_version, read_pid_file, rotate_log, Layout,
};

pub use error::EmbeddedError;

/// Port number; with no TCP listener it only names the socket file `.s.PGSQL.<port>`.
const PG_PORT: u16 = 5432;
/// Settings file Switchboard rewrites in PGDATA before every start.
const CONF_FILE: &str = "switchboard.conf";
/// Line appended to `postgresql.conf` so that it reads [`CONF_FILE`].
const INCLUDE_DIRECTIVE: &str = "include 'switchboard.conf'";
/// Seconds `pg_ctl` waits for the server to start.
const START_TIMEOUT_SECS: u32 = 60;
/// How long to wait for the first successful connection after the start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit for a single connection attempt while waiting for readiness.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between connection attempts.
const READY_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Number of lines of command output or server log quoted in errors.
const TAIL_LINES: usize = 20;

/// A running private PostgreSQL cluster.
///
/// Dropping the value without calling [`EmbeddedPostgres::stop`] leaves the
/// server running; the next [`EmbeddedPostgres::start`] on the same directory
/// adopts it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// Paths of the cluster's files.
    layout: Layout,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`.
    bin_dir: PathBuf,
    /// Account the server binaries run as; `None` means the current user.
    server_user: Option<ServerUser>,
    /// Socket directory the running server actually uses.
    socket_dir: PathBuf,
    /// Port that names the running server's socket file.
    port: u16,
    /// Whether this value started the server, and so whether `stop` stops it.
    started_here: bool,
}

/// The unprivileged account the server runs as when Switchboard is root.
#[derive(Debug, Clone)]
struct ServerUser {
    /// Login name, for messages.
    name: String,
    /// User id the binaries run with.
    uid: Uid,
    /// Primary group id the binaries run with.
    gid: Gid,
}

impl From<User> for ServerUser {
    fn from(user: User) -> Self {
        Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }
    }
}

impl EmbeddedPostgres {
    /// Superuser created by initdb; used only to bootstrap roles and databases.
    pub const SUPERUSER: &'static str = "switchboard_admin";

    /// Initialise the cluster under `dir` if it has none, start it if it is not running,
    /// and wait until it accepts connections. `bin_dir` overrides binary discovery.
    pub async fn start(dir: &Path, bin_dir: Option<&Path>) -> Result<Self, EmbeddedError> {
        let layout = Layout::new(prepare_root(dir)?);
        let lock = lock_directory(&layout.lock).await?;

        let cluster_version = read_cluster_version(&layout.data)?;
        let bin_dir = discover_binaries(bin_dir, cluster_version.as_deref())?;
        let server_user = choose_server_user(&layout.data)?;
        {
            let layout = layout.clone();
            let user = server_user.clone();
            blocking(move || prepare_layout(&layout, user.as_ref())).await?;
        }

        let mut pg = Self {
            socket_dir: layout.socket_dir.clone(),
            port: PG_PORT,
            layout,
            bin_dir,
            server_user,
            started_here: false,
        };
        match cluster_version {
            Some(version) => pg.check_binary_version(&version).await?,
            None => pg.initdb().await?,
        }

        if pg.is_running().await? {
            pg.adopt_running_server();
            info!(
                "PostgreSQL is already running in {}; it will be left running",
                pg.layout.data.display()
            );
        } else {
            pg.write_config(&pg.layout.data)?;
            rotate_log(&pg.layout.log);
            pg.pg_ctl_start().await?;
            pg.started_here = true;
        }

        if let Err(error) = pg.wait_ready().await {
            if pg.started_here {
                if let Err(stop_error) = pg.pg_ctl_stop().await {
                    warn!("could not stop PostgreSQL after a failed start: {stop_error}");
                }
            }
            return Err(error);
        }
        drop(lock);
        info!(
            "PostgreSQL ready (socket directory {})",
            pg.socket_dir.display()
        );
        Ok(pg)
    }

    /// sqlx connect options for `role` on `database` over the cluster's unix socket.
    pub fn connect_options(&self, role: &str, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(&self.socket_dir.to_string_lossy())
            .socket(&self.socket_dir)
            .port(self.port)
            .username(role)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
            .application_name("switchboard")
    }

    /// Stop the server if this value started it (fast shutdown, wait). A cluster that was
    /// already running when `start` was called is left running.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            info!(
                "leaving PostgreSQL in {} running: it was already running when it was adopted",
                self.layout.data.display()
            );
            return Ok(());
        }
        let _lock = lock_directory(&self.layout.lock).await?;
        self.pg_ctl_stop().await
    }

    /// PGDATA of the cluster (`<dir>/data`).
    pub fn data_dir(&self) -> &Path {
        &self.layout.data
    }

    /// Whether this value started the server (and so whether [`EmbeddedPostgres::stop`]
    /// stops it); `false` when the server was already running.
    pub fn started_server(&self) -> bool {
        self.started_here
    }

    /// A command for one of the server programs, run as the server user with a clean
    /// PostgreSQL environment and a locale that always exists.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .current_dir(&self.layout.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .env("LANG", "C");
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                command.env_remove(key);
            }
        }
        if let Some(user) = &self.server_user {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command
    }

    /// Runs a prepared server command to completion, capturing its output.
    async fn run(&self, program: &str, command: &mut Command) -> Result<Output, EmbeddedError> {
        command.output().await.map_err(|source| EmbeddedError::Io {
            context: format!("could not run {}", self.bin_dir.join(program).display()),
            source,
        })
    }

    /// Fails unless the binaries are the major version that created the cluster.
    async fn check_binary_version(&self, cluster: &str) -> Result<(), EmbeddedError> {
        let output = self
            .run("postgres", self.server_command("postgres").arg("--version"))
            .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        match parse_major_version(&text) {
            Some(binaries) if binaries == cluster => Ok(()),
            Some(binaries) => Err(EmbeddedError::VersionMismatch {
                data_dir: self.layout.data.clone(),
                cluster: cluster.to_string(),
                bin_dir: self.bin_dir.clone(),
                binaries,
            }),
            None => {
                warn!(
                    "could not tell the version of {} from {:?}; trying to start anyway",
                    self.bin_dir.join("postgres").display(),
                    text.trim()
                );
                Ok(())
            }
        }
    }

    /// Creates the cluster in a staging directory and renames it into place, so an
    /// interrupted initdb never leaves a half-made `data` directory behind.
    async fn initdb(&self) -> Result<(), EmbeddedError> {
        let staging = &self.layout.staging;
        info!(
            "initialising private PostgreSQL cluster in {}",
            self.layout.data.display()
        );
        let mut output = self.run_initdb(&["--locale=C.UTF-8"]).await?;
        if !output.status.success() && combined_output(&output).contains("locale") {
            warn!("locale C.UTF-8 is not available; initialising the cluster with --no-locale");
            output = self.run_initdb(&["--no-locale"]).await?;
        }
        if !output.status.success() {
            if let Err(error) = fs::remove_dir_all(staging) {
                warn!("could not remove {}: {error}", staging.display());
            }
            return Err(EmbeddedError::InitdbFailed {
                data_dir: self.layout.data.clone(),
                status: output.status,
                output: last_lines(&combined_output(&output), TAIL_LINES),
            });
        }
        self.write_config(staging)?;
        fs::rename(staging, &self.layout.data).map_err(|source| EmbeddedError::Io {
            context: format!(
                "could not rename {} to {}",
                staging.display(),
                self.layout.data.display()
            ),
            source,
        })?;
        if let Err(error) = File::open(&self.layout.root).and_then(|dir| dir.sync_all()) {
            warn!("could not sync {}: {error}", self.layout.root.display());
        }
        Ok(())
    }

    /// One initdb attempt into a fresh staging directory.
    async fn run_initdb(&self, locale_args: &[&str]) -> Result<Output, EmbeddedError> {
        let staging = &self.layout.staging;
        match fs::remove_dir_all(staging) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EmbeddedError::Io {
                    context: format!("could not remove {}", staging.display()),
                    source,
                })
            }
        }
        create_dir(staging, 0o700)?;
        if let Some(user) = &self.server_user {
            chown(staging, user)?;
        }
        let mut command = self.server_command("initdb");
        command
            .arg("-D")
            .arg(staging)
            .args(["-U", Self::SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            .args(locale_args);
        self.run("initdb", &mut command).await
    }

    /// Writes [`CONF_FILE`] into `data` and makes `postgresql.conf` include it.
    fn write_config(&self, data: &Path) -> Result<(), EmbeddedError> {
        let path = data.join(CONF_FILE);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(config_text(&self.layout.socket_dir).as_bytes()))
            .map_err(|source| EmbeddedError::Io {
                context: format!("could not write {}", path.display()),
                source,
            })?;
        if let Some(user) = &self.server_user {
            chown(&path, user)?;
        }

        let main_conf = data.join("postgresql.conf");
        let text = fs::read_to_string(&main_conf).map_err(|source| EmbeddedError::Io {
            context: format!("could not read {}", main_conf.display()),
            source,
        })?;
        if !text.lines().any(|line| line.trim() == INCLUDE_DIRECTIVE) {
            OpenOptions::new()
                .append(true)
                .open(&main_conf)
                .and_then(|mut file| {
                    write!(
                        file,
                        "\n# Added by Switchboard: private unix socket only, small-machine sizing.\n{INCLUDE_DIRECTIVE}\n"
                    )
                })
                .map_err(|source| EmbeddedError::Io {
                    context: format!("could not append to {}", main_conf.display()),
                    source,
                })?;
        }
        Ok(())
    }

    /// Asks `pg_ctl status` whether a server is running on the data directory.
    async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let mut command = self.server_command("pg_ctl");
        command.arg("-D").arg(&self.layout.data).arg("status");
        let output = self.run("pg_ctl", &mut command).await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(EmbeddedError::StatusFailed {
                data_dir: self.layout.data.clone(),
                status: output.status,
                output: last_lines(&combined_output(&output), TAIL_LINES),
            }),
        }
    }

    /// Connects to a server that was already running where its pid file says it listens.
    fn adopt_running_server(&mut self) {
        let Some(pid_file) = read_pid_file(&self.layout.data) else {
            return;
        };
        if let Some(socket_dir) = pid_file.socket_dir {
            if socket_dir != self.socket_dir {
                warn!(
                    "the running PostgreSQL listens in {} rather than {}",
                    socket_dir.display(),
                    self.socket_dir.display()
                );
                self.socket_dir = socket_dir;
            }
        }
        if let Some(port) = pid_file.port {
            self.port = port;
        }
    }

    /// `pg_ctl start`, waiting until the server reports it is ready.
    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        info!("starting PostgreSQL in {}", self.layout.data.display());
        let mut command = self.server_command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.layout.data)
            .arg("-l")
            .arg(&self.layout.log)
            .args(["-w", "-t", &START_TIMEOUT_SECS.to_string()])
            .args(["-o", "-c listen_addresses=''", "start"]);
        let output = self.run("pg_ctl", &mut command).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::StartFailed {
                status: output.status,
                output: last_lines(&combined_output(&output), TAIL_LINES),
                log: self.layout.log.clone(),
                log_tail: log_tail(&self.layout.log),
            })
        }
    }

    /// `pg_ctl stop` with fast shutdown, waiting until the server is gone.
    async fn pg_ctl_stop(&self) -> Result<(), EmbeddedError> {
        info!("stopping PostgreSQL in {}", self.layout.data.display());
        let mut command = self.server_command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.layout.data)
            .args(["-m", "fast", "-w", "stop"]);
        let output = self.run("pg_ctl", &mut command).await?;
        if output.status.success() {
            info!("PostgreSQL stopped");
            return Ok(());
        }
        if !self.is_running().await? {
            warn!(
                "PostgreSQL in {} was no longer running",
                self.layout.data.display()
            );
            return Ok(());
        }
        Err(EmbeddedError::StopFailed {
            status: output.status,
            output: last_lines(&combined_output(&output), TAIL_LINES),
            log: self.layout.log.clone(),
            log_tail: log_tail(&self.layout.log),
        })
    }

    /// Retries a superuser connection to `postgres` until it succeeds or time runs out.
    async fn wait_ready(&self) -> Result<(), EmbeddedError> {
        let options = self.connect_options(Self::SUPERUSER, "postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout(
                CONNECT_ATTEMPT_TIMEOUT,
                PgConnection::connect_with(&options),
            )
            .await;
            let last_error = match attempt {
                Ok(Ok(connection)) => {
                    if let Err(error) = connection.close().await {
                        warn!("closing the readiness probe connection failed: {error}");
                    }
                    return Ok(());
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "connection attempt timed out".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(EmbeddedError::NotReady {
                    socket_dir: self.socket_dir.clone(),
                    secs: READY_TIMEOUT.as_secs(),
                    last_error,
                    log: self.layout.log.clone(),
                    log_tail: log_tail(&self.layout.log),
                });
            }
            tokio::time::sleep(READY_RETRY_PAUSE).await;
        }
    }
}

/// Runs blocking filesystem work off the async runtime's worker threads.
async fn blocking<F>(work: F) -> Result<(), EmbeddedError>
where
    F: FnOnce() -> Result<(), EmbeddedError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| EmbeddedError::Io {
            context: "preparing the PostgreSQL directories failed".into(),
            source: io::Error::other(error),
        })?
}

/// The settings Switchboard writes to [`CONF_FILE`] before every start.
fn config_text(socket_dir: &Path) -> String {
    let socket_dir = socket_dir
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('\'', "''");
    format!(
        "# Written by Switchboard before every start; edits here are overwritten.\n\
         # Use ALTER SYSTEM (postgresql.auto.conf) for lasting changes.\n\
         listen_addresses = ''\n\
         port = {PG_PORT}\n\
         unix_socket_directories = '{socket_dir}'\n\
         unix_socket_permissions = 0700\n\
         max_connections = 100\n\
         shared_buffers = 64MB\n\
         effective_cache_size = 256MB\n\
         work_mem = 4MB\n\
         maintenance_work_mem = 32MB\n\
         min_wal_size = 80MB\n\
         max_wal_size = 256MB\n\
         max_worker_processes = 4\n\
         max_parallel_workers = 2\n\
         max_parallel_workers_per_gather = 1\n\
         max_parallel_maintenance_workers = 1\n\
         fsync = on\n\
         synchronous_commit = on\n\
         full_page_writes = on\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n"
    )
}

/// A process's stdout followed by its stderr, as text.
fn combined_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// The last `count` lines of `text`.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_socket_dir_in_config() {
        let text = config_text(Path::new("/srv/o'brien/run"));
        assert!(text.contains("unix_socket_directories = '/srv/o''brien/run'"));
        assert!(text.contains("listen_addresses = ''"));
    }

    #[test]
    fn keeps_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }
}
