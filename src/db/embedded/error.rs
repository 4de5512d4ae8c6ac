//! [`EmbeddedError`]: why the private cluster could not be prepared, started or stopped.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

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
