//! Finding the PostgreSQL server binaries, reading their version, and choosing who runs them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{geteuid, Uid, User};

use super::{EmbeddedError, ServerUser};

/// Where Debian's PostgreSQL packages install one directory per major version.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// Programs a usable binary directory must contain.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Accounts the server may run as when Switchboard runs as root, best first.
const SERVER_USERS: [&str; 2] = ["postgres", "nobody"];

/// Finds the directory holding the server binaries: `explicit` if given; else the
/// Debian directory for the cluster's version, else the highest Debian version; else
/// the directory of `initdb` on `PATH`.
pub(super) fn discover_binaries(
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
pub(super) fn parse_major_version(text: &str) -> Option<String> {
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
pub(super) fn choose_server_user(data: &Path) -> Result<Option<ServerUser>, EmbeddedError> {
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
}
