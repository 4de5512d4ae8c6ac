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

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{geteuid, Gid, Uid, User};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{info, warn};

/// Port number; with no TCP listener it only names the socket file `.s.PGSQL.<port>`.
const PG_PORT: u16 = 5432;
/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Where Debian's PostgreSQL packages install one directory per major version.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// Programs a usable binary directory must contain.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Accounts the server may run as when Switchboard runs as root, best first.
const SERVER_USERS: [&str; 2] = ["postgres", "nobody"];
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
/// How long to wait for another process holding the directory lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between attempts to take the directory lock.
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The server log is moved aside to `postgres.log.1` at start when larger than this.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// Number of lines of command output or server log quoted in errors.
const TAIL_LINES: usize = 20;

/// Why the private PostgreSQL cluster could not be prepared, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; searched {searched}. \
         Install the Debian package `postgresql` (apt-get install postgresql), which provides \
         them in /usr/lib/postgresql/<version>/bin, name their directory explicitly, or \
         configure a database URL instead"
    )]
    BinariesNotFound {
        /// The directories that were searched.
        searched: String,
    },
    /// The cluster was created by a different PostgreSQL major version than the binaries.
    #[error(
        "the PostgreSQL cluster in {data_dir} was created by PostgreSQL {cluster}, but the \
         binaries in {bin_dir} are PostgreSQL {binaries}; install the PostgreSQL {cluster} \
         server (Debian package postgresql-{cluster}) or upgrade the cluster with pg_upgrade"
    )]
    VersionMismatch {
        /// PGDATA of the cluster.
        data_dir: PathBuf,
        /// Major version recorded in the cluster's `PG_VERSION`.
        cluster: String,
        /// Directory of the binaries that were found.
        bin_dir: PathBuf,
        /// Major version the binaries report.
        binaries: String,
    },
    /// Running as root, but no unprivileged account exists to run the server.
    #[error(
        "Switchboard runs as root, but PostgreSQL refuses to, and neither the `postgres` nor \
         the `nobody` user exists to run it; create a system user \
         (adduser --system --group postgres) or configure a database URL"
    )]
    NoServerUser,
    /// The unprivileged server user cannot reach the cluster's directory.
    #[error(
        "the PostgreSQL server runs as user `{user}`, who cannot enter {dir} (no execute \
         permission); choose a data directory that user can reach, such as \
         /var/lib/switchboard or /tmp/switchboard, or allow it with `chmod o+x {dir}`"
    )]
    DirNotAccessible {
        /// The first directory on the path the user may not traverse.
        dir: PathBuf,
        /// The account the server runs as.
        user: String,
    },
    /// The directory path cannot be handed to PostgreSQL's tools safely.
    #[error("cannot use {path} for the private PostgreSQL cluster: {reason}")]
    UnsupportedPath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `<dir>/data` exists but holds something other than a cluster.
    #[error(
        "{data_dir} exists and is not empty, but is not a PostgreSQL cluster (no PG_VERSION); \
         move it away or choose another data directory"
    )]
    NotACluster {
        /// The directory that should hold the cluster.
        data_dir: PathBuf,
    },
    /// The socket directory exists but cannot be trusted or used.
    #[error("cannot use {path} as the PostgreSQL socket directory: {reason}")]
    SocketDir {
        /// The socket directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process held the directory lock for too long.
    #[error(
        "gave up after {secs} s waiting for {path}: another process is initialising, starting \
         or stopping this PostgreSQL cluster"
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// Seconds waited.
        secs: u64,
    },
    /// A filesystem operation or process spawn failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `initdb` exited unsuccessfully.
    #[error(
        "initdb failed to create a PostgreSQL cluster in {data_dir} ({status}); its output \
         ends with:\n{output}"
    )]
    InitdbFailed {
        /// The directory initdb was asked to fill.
        data_dir: PathBuf,
        /// How initdb exited.
        status: ExitStatus,
        /// The last lines initdb printed.
        output: String,
    },
    /// `pg_ctl start` exited unsuccessfully.
    #[error(
        "PostgreSQL failed to start ({status}): {output}\nserver log {log} ends with:\n{log_tail}"
    )]
    StartFailed {
        /// How pg_ctl exited.
        status: ExitStatus,
        /// The last lines pg_ctl printed.
        output: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server started but no connection succeeded in time.
    #[error(
        "PostgreSQL did not accept connections on {socket_dir} within {secs} s (last error: \
         {last_error}); server log {log} ends with:\n{log_tail}"
    )]
    NotReady {
        /// The socket directory connections were tried on.
        socket_dir: PathBuf,
        /// Seconds waited.
        secs: u64,
        /// The last connection error.
        last_error: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// `pg_ctl status` gave an answer other than running or not running.
    #[error(
        "could not determine whether PostgreSQL is running in {data_dir} ({status}): {output}"
    )]
    StatusFailed {
        /// PGDATA of the cluster.
        data_dir: PathBuf,
        /// How pg_ctl exited.
        status: ExitStatus,
        /// The last lines pg_ctl printed.
        output: String,
    },
    /// `pg_ctl stop` failed and the server is still running.
    #[error(
        "PostgreSQL did not stop ({status}): {output}\nserver log {log} ends with:\n{log_tail}"
    )]
    StopFailed {
        /// How pg_ctl exited.
        status: ExitStatus,
        /// The last lines pg_ctl printed.
        output: String,
        /// The server log file.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },
}

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

/// Where the cluster's files live, derived from the directory given to `start`.
#[derive(Debug, Clone)]
struct Layout {
    /// The canonical directory given to `start`.
    root: PathBuf,
    /// PGDATA: `root/data`.
    data: PathBuf,
    /// Where initdb builds a new cluster before it is renamed to `data`.
    staging: PathBuf,
    /// Unix socket directory: `root/run`, or the `/tmp` fallback for long paths.
    socket_dir: PathBuf,
    /// Whether `socket_dir` is `root/run` (inside our own tree).
    socket_in_root: bool,
    /// Server log: `root/postgres.log`.
    log: PathBuf,
    /// Lock file: `root/.lock`.
    lock: PathBuf,
}

impl Layout {
    /// Derives every path from the canonical root directory.
    fn new(root: PathBuf) -> Self {
        let run = root.join("run");
        let socket_path_len = run.as_os_str().len() + 1 + socket_file_name(PG_PORT).len();
        let (socket_dir, socket_in_root) = if socket_path_len <= MAX_SOCKET_PATH {
            (run, true)
        } else {
            let digest = Sha256::digest(root.as_os_str().as_bytes());
            let name = format!("switchboard-pg-{}", hex::encode(&digest[..8]));
            (Path::new("/tmp").join(name), false)
        };
        Self {
            data: root.join("data"),
            staging: root.join("data.initdb"),
            socket_dir,
            socket_in_root,
            log: root.join("postgres.log"),
            lock: root.join(".lock"),
            root,
        }
    }
}

/// Contents of a running server's `postmaster.pid` that matter for connecting.
struct PidFile {
    /// The port the server uses.
    port: Option<u16>,
    /// The first unix socket directory the server listens in.
    socket_dir: Option<PathBuf>,
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

/// Creates `dir` (mode 0755 for new directories), canonicalises it and checks that
/// PostgreSQL's tools can be given its path.
fn prepare_root(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| EmbeddedError::Io {
            context: format!("could not create {}", dir.display()),
            source,
        })?;
    let root = fs::canonicalize(dir).map_err(|source| EmbeddedError::Io {
        context: format!("could not resolve {}", dir.display()),
        source,
    })?;
    let Some(text) = root.to_str() else {
        return Err(EmbeddedError::UnsupportedPath {
            path: root,
            reason: "the path is not valid UTF-8".into(),
        });
    };
    // pg_ctl pastes paths into a shell command inside double quotes.
    if let Some(bad) = text
        .chars()
        .find(|c| matches!(c, '"' | '$' | '`' | '\\') || c.is_control())
    {
        return Err(EmbeddedError::UnsupportedPath {
            reason: format!("the path contains {bad:?}, which pg_ctl cannot quote"),
            path: root,
        });
    }
    Ok(root)
}

/// Takes an exclusive `flock` on `path`, waiting up to [`LOCK_TIMEOUT`].
async fn lock_directory(path: &Path) -> Result<Flock<File>, EmbeddedError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| EmbeddedError::Io {
            context: format!("could not open lock file {}", path.display()),
            source,
        })?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut announced = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((unlocked, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                file = unlocked;
                if Instant::now() >= deadline {
                    return Err(EmbeddedError::LockTimeout {
                        path: path.to_path_buf(),
                        secs: LOCK_TIMEOUT.as_secs(),
                    });
                }
                if !announced {
                    info!("waiting for another process to release {}", path.display());
                    announced = true;
                }
                tokio::time::sleep(LOCK_RETRY_PAUSE).await;
            }
            Err((_, errno)) => {
                return Err(EmbeddedError::Io {
                    context: format!("could not lock {}", path.display()),
                    source: io::Error::from(errno),
                })
            }
        }
    }
}

/// The major version in `data/PG_VERSION`, or `None` when there is no cluster yet.
/// An empty leftover `data` directory is removed; a non-empty one is an error.
fn read_cluster_version(data: &Path) -> Result<Option<String>, EmbeddedError> {
    let version_file = data.join("PG_VERSION");
    match fs::read_to_string(&version_file) {
        Ok(text) => return Ok(Some(text.trim().to_string())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EmbeddedError::Io {
                context: format!("could not read {}", version_file.display()),
                source,
            })
        }
    }
    match fs::read_dir(data) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(EmbeddedError::NotACluster {
                    data_dir: data.to_path_buf(),
                });
            }
            fs::remove_dir(data).map_err(|source| EmbeddedError::Io {
                context: format!("could not remove empty {}", data.display()),
                source,
            })?;
            Ok(None)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EmbeddedError::Io {
            context: format!("could not read {}", data.display()),
            source,
        }),
    }
}

/// Finds the directory holding the server binaries: `explicit` if given; else the
/// Debian directory for the cluster's version, else the highest Debian version; else
/// the directory of `initdb` on `PATH`.
fn discover_binaries(
    explicit: Option<&Path>,
    cluster_version: Option<&str>,
) -> Result<PathBuf, EmbeddedError> {
    if let Some(dir) = explicit {
        return if has_server_programs(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(EmbeddedError::BinariesNotFound {
                searched: dir.display().to_string(),
            })
        };
    }

    let mut installed: Vec<(Vec<u32>, String, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir(DEBIAN_PG_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = version_key(&name) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server_programs(&bin) {
                installed.push((key, name, bin));
            }
        }
    }
    if let Some(wanted) = cluster_version {
        if let Some((_, _, bin)) = installed.iter().find(|(_, name, _)| name == wanted) {
            return Ok(bin.clone());
        }
    }
    installed.sort();
    if let Some((_, _, bin)) = installed.pop() {
        return Ok(bin);
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !is_executable(&initdb) {
                continue;
            }
            let resolved = fs::canonicalize(&initdb)
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf));
            for candidate in resolved.into_iter().chain([dir]) {
                if has_server_programs(&candidate) {
                    return Ok(candidate);
                }
            }
        }
    }
    Err(EmbeddedError::BinariesNotFound {
        searched: format!("{DEBIAN_PG_ROOT}/*/bin and $PATH"),
    })
}

/// Sort key for a Debian version directory name such as `15` or `9.6`.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Whether `dir` contains every program in [`SERVER_PROGRAMS`].
fn has_server_programs(dir: &Path) -> bool {
    SERVER_PROGRAMS
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// The major version in `postgres --version` output: `15` from
/// `postgres (PostgreSQL) 15.8 (Debian ...)`, `9.6` from `... 9.6.24`.
fn parse_major_version(text: &str) -> Option<String> {
    let version = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let first = parts.next()?;
    let first_number: u32 = first.parse().ok()?;
    if first_number >= 10 {
        Some(first.to_string())
    } else {
        Some(format!("{first}.{}", parts.next()?))
    }
}

/// Picks the account to run the server as: `None` unless we are root; else the owner
/// of an existing cluster, else `postgres`, else `nobody`.
fn choose_server_user(data: &Path) -> Result<Option<ServerUser>, EmbeddedError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    if let Ok(meta) = fs::symlink_metadata(data) {
        if meta.uid() != 0 {
            if let Ok(Some(owner)) = User::from_uid(Uid::from_raw(meta.uid())) {
                return Ok(Some(owner.into()));
            }
        }
    }
    SERVER_USERS
        .iter()
        .find_map(|name| User::from_name(name).ok().flatten())
        .map(|user| Some(user.into()))
        .ok_or(EmbeddedError::NoServerUser)
}

/// Creates the socket directory and log file, hands them (and a cluster owned by
/// someone else) to the server user, and checks that user can reach them all.
fn prepare_layout(layout: &Layout, user: Option<&ServerUser>) -> Result<(), EmbeddedError> {
    if let Some(user) = user {
        check_traversable(&layout.root, user)?;
    }
    prepare_socket_dir(layout, user)?;

    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&layout.log)
        .map_err(|source| EmbeddedError::Io {
            context: format!("could not create {}", layout.log.display()),
            source,
        })?;

    if let Some(user) = user {
        chown_if_needed(&layout.log, user)?;
        check_traversable(&layout.socket_dir, user)?;
        if let Ok(meta) = fs::symlink_metadata(&layout.data) {
            if meta.uid() != user.uid.as_raw() {
                info!(
                    "handing {} to user {} so PostgreSQL can run as that user",
                    layout.data.display(),
                    user.name
                );
                chown_tree(&layout.data, user)?;
                set_mode(&layout.data, 0o700)?;
            }
        }
    }
    Ok(())
}

/// Creates the socket directory (mode 0700, owned by the server user) or checks an
/// existing one is a real directory that belongs to that user.
fn prepare_socket_dir(layout: &Layout, user: Option<&ServerUser>) -> Result<(), EmbeddedError> {
    let dir = &layout.socket_dir;
    let created = match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(EmbeddedError::Io {
                context: format!("could not create {}", dir.display()),
                source,
            })
        }
    };
    let meta = fs::symlink_metadata(dir).map_err(|source| EmbeddedError::Io {
        context: format!("could not inspect {}", dir.display()),
        source,
    })?;
    if !meta.is_dir() {
        return Err(EmbeddedError::SocketDir {
            path: dir.clone(),
            reason: "it exists but is not a directory; remove it".into(),
        });
    }
    let expected = user.map_or_else(geteuid, |user| user.uid);
    if meta.uid() != expected.as_raw() {
        match user {
            Some(user) if created || layout.socket_in_root => chown(dir, user)?,
            _ => {
                return Err(EmbeddedError::SocketDir {
                    path: dir.clone(),
                    reason: format!(
                        "it belongs to uid {} instead of uid {}; remove it",
                        meta.uid(),
                        expected
                    ),
                })
            }
        }
    }
    set_mode(dir, 0o700)
}

/// Fails with [`EmbeddedError::DirNotAccessible`] naming the first directory on the
/// way to `path` (inclusive) that `user` may not traverse.
fn check_traversable(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    let mut dirs: Vec<&Path> = path.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let meta = fs::metadata(dir).map_err(|source| EmbeddedError::Io {
            context: format!("could not inspect {}", dir.display()),
            source,
        })?;
        if !may_traverse(&meta, user) {
            return Err(EmbeddedError::DirNotAccessible {
                dir: dir.to_path_buf(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the permission bits let `user` (with no supplementary groups, as the
/// spawned server has none) search a directory.
fn may_traverse(meta: &Metadata, user: &ServerUser) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid.as_raw() {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid.as_raw() {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Gives `path` (not following symlinks) to the server user.
fn chown(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(
        |source| EmbeddedError::Io {
            context: format!("could not give {} to user {}", path.display(), user.name),
            source,
        },
    )
}

/// [`chown`], skipped when the server user already owns `path`.
fn chown_if_needed(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() == user.uid.as_raw() && meta.gid() == user.gid.as_raw() => Ok(()),
        _ => chown(path, user),
    }
}

/// [`chown`] for `path` and everything below it, without following symlinks.
fn chown_tree(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    chown(path, user)?;
    let meta = fs::symlink_metadata(path).map_err(|source| EmbeddedError::Io {
        context: format!("could not inspect {}", path.display()),
        source,
    })?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| EmbeddedError::Io {
            context: format!("could not read {}", path.display()),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| EmbeddedError::Io {
                context: format!("could not read {}", path.display()),
                source,
            })?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

/// Sets the permission bits of `path`.
fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        EmbeddedError::Io {
            context: format!("could not set the permissions of {}", path.display()),
            source,
        }
    })
}

/// Creates one directory with the given mode.
fn create_dir(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|source| EmbeddedError::Io {
            context: format!("could not create {}", path.display()),
            source,
        })
}

/// Moves a large server log aside before a start (the server is not running).
fn rotate_log(log: &Path) {
    let Ok(meta) = fs::metadata(log) else {
        return;
    };
    if meta.len() <= LOG_ROTATE_BYTES {
        return;
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    if let Err(error) = fs::rename(log, &old) {
        warn!("could not rotate {}: {error}", log.display());
        return;
    }
    // Recreate it with the old owner so the server user can still write it.
    let recreated = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log)
        .and_then(|_| std::os::unix::fs::lchown(log, Some(meta.uid()), Some(meta.gid())));
    if let Err(error) = recreated {
        warn!("could not recreate {}: {error}", log.display());
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

/// Name of the socket file for `port`.
fn socket_file_name(port: u16) -> String {
    format!(".s.PGSQL.{port}")
}

/// Port and socket directory from `data/postmaster.pid` (lines 4 and 5).
fn read_pid_file(data: &Path) -> Option<PidFile> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(PidFile {
        port: lines.get(3).and_then(|line| line.trim().parse().ok()),
        socket_dir: lines
            .get(4)
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
            .map(PathBuf::from),
    })
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

/// The last lines of the server log, or why they could not be read.
fn log_tail(log: &Path) -> String {
    const WINDOW: u64 = 64 * 1024;
    let read = File::open(log).and_then(|mut file| {
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), TAIL_LINES),
        Err(error) => format!("(could not read {}: {error})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some("15".to_string())
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 9.6.24"),
            Some("9.6".to_string())
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17beta1"),
            Some("17".to_string())
        );
        assert_eq!(parse_major_version("something else"), None);
    }

    #[test]
    fn orders_debian_version_directories() {
        let mut keys = [version_key("9.6"), version_key("15"), version_key("10")];
        keys.sort();
        assert_eq!(keys.last(), Some(&Some(vec![15])));
        assert_eq!(version_key("15-beta"), None);
    }

    #[test]
    fn long_roots_put_the_socket_in_tmp() {
        let short = Layout::new(PathBuf::from("/var/lib/switchboard/postgres"));
        assert!(short.socket_in_root);
        assert_eq!(
            short.socket_dir,
            Path::new("/var/lib/switchboard/postgres/run")
        );

        let long_root = PathBuf::from(format!("/srv/{}", "x".repeat(100)));
        let long = Layout::new(long_root.clone());
        assert!(!long.socket_in_root);
        assert!(long.socket_dir.starts_with("/tmp"));
        assert_eq!(Layout::new(long_root).socket_dir, long.socket_dir);
        let socket = long.socket_dir.join(socket_file_name(PG_PORT));
        assert!(socket.as_os_str().len() <= MAX_SOCKET_PATH);
    }

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
