//! The cluster's files: layout, lock, ownership and modes, socket dir, server log, pid file.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{last_lines, EmbeddedError, ServerUser, PG_PORT, TAIL_LINES};

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long to wait for another process holding the directory lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between attempts to take the directory lock.
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The server log is moved aside to `postgres.log.1` at start when larger than this.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// Where the cluster's files live, derived from the directory given to `start`.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The canonical directory given to `start`.
    pub(super) root: PathBuf,
    /// PGDATA: `root/data`.
    pub(super) data: PathBuf,
    /// Where initdb builds a new cluster before it is renamed to `data`.
    pub(super) staging: PathBuf,
    /// Unix socket directory: `root/run`, or the `/tmp` fallback for long paths.
    pub(super) socket_dir: PathBuf,
    /// Whether `socket_dir` is `root/run` (inside our own tree).
    socket_in_root: bool,
    /// Server log: `root/postgres.log`.
    pub(super) log: PathBuf,
    /// Lock file: `root/.lock`.
    pub(super) lock: PathBuf,
}

impl Layout {
    /// Derives every path from the canonical root directory.
    pub(super) fn new(root: PathBuf) -> Self {
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
pub(super) struct PidFile {
    /// The port the server uses.
    pub(super) port: Option<u16>,
    /// The first unix socket directory the server listens in.
    pub(super) socket_dir: Option<PathBuf>,
}

/// Creates `dir` (mode 0755 for new directories), canonicalises it and checks that
/// PostgreSQL's tools can be given its path.
pub(super) fn prepare_root(dir: &Path) -> Result<PathBuf, EmbeddedError> {
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
pub(super) async fn lock_directory(path: &Path) -> Result<Flock<File>, EmbeddedError> {
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
pub(super) fn read_cluster_version(data: &Path) -> Result<Option<String>, EmbeddedError> {
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

/// Creates the socket directory and log file, hands them (and a cluster owned by
/// someone else) to the server user, and checks that user can reach them all.
pub(super) fn prepare_layout(
    layout: &Layout,
    user: Option<&ServerUser>,
) -> Result<(), EmbeddedError> {
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
pub(super) fn chown(path: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
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
pub(super) fn create_dir(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|source| EmbeddedError::Io {
            context: format!("could not create {}", path.display()),
            source,
        })
}

/// Moves a large server log aside before a start (the server is not running).
pub(super) fn rotate_log(log: &Path) {
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

/// Name of the socket file for `port`.
fn socket_file_name(port: u16) -> String {
    format!(".s.PGSQL.{port}")
}

/// Port and socket directory from `data/postmaster.pid` (lines 4 and 5).
pub(super) fn read_pid_file(data: &Path) -> Option<PidFile> {
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

/// The last lines of the server log, or why they could not be read.
pub(super) fn log_tail(log: &Path) -> String {
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
}
