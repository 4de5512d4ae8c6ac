//! Typed settings: an optional TOML file overlaid with `SWITCHBOARD_*`
//! environment variables, validated once at start; secrets stay wrapped.
//!
//! Precedence, lowest first: built-in defaults, the TOML file
//! (`--config PATH`, `SWITCHBOARD_CONFIG`, or `./switchboard.toml` when it
//! exists), then environment variables. Every setting has one variable; the
//! table lives in the README and in [`ENV_VARS`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Environment variables Switchboard reads, with the setting each overrides.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SWITCHBOARD_CONFIG", "path of the TOML configuration file"),
    ("SWITCHBOARD_LISTEN", "listen"),
    ("SWITCHBOARD_PUBLIC_URL", "public_url"),
    ("SWITCHBOARD_DATA_DIR", "data_dir"),
    ("SWITCHBOARD_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs"),
    ("SWITCHBOARD_PROVIDERS", "providers"),
    ("SWITCHBOARD_RUN_JOBS", "run_jobs"),
    ("SWITCHBOARD_LOG_FORMAT", "log.format"),
    ("SWITCHBOARD_LOG_LEVEL", "log.level"),
    ("SWITCHBOARD_DATABASE_URL", "database.url"),
    ("SWITCHBOARD_DATABASE_OWNER_URL", "database.owner_url"),
    ("SWITCHBOARD_DATABASE_ADMIN_URL", "database.admin_url"),
    (
        "SWITCHBOARD_DATABASE_MAX_CONNECTIONS",
        "database.max_connections",
    ),
    ("SWITCHBOARD_POSTGRES_BIN_DIR", "database.postgres_bin_dir"),
    ("SWITCHBOARD_MASTER_KEY", "secrets.master_key"),
    (
        "SWITCHBOARD_MASTER_KEY_VERSION",
        "secrets.master_key_version",
    ),
    (
        "SWITCHBOARD_PREVIOUS_MASTER_KEYS",
        "secrets.previous_master_keys",
    ),
    ("SWITCHBOARD_TWILIO_ACCOUNT_SID", "twilio.account_sid"),
    ("SWITCHBOARD_TWILIO_AUTH_TOKEN", "twilio.auth_token"),
    ("SWITCHBOARD_TWILIO_API_BASE", "twilio.api_base"),
    (
        "SWITCHBOARD_TWILIO_CALL_TOKEN_TTL_SECS",
        "twilio.call_token_ttl_secs",
    ),
    ("SWITCHBOARD_MEMORY_URL", "memory.url"),
    ("SWITCHBOARD_MEMORY_SERVICE_KEY", "memory.service_key"),
    ("SWITCHBOARD_DEEPGRAM_API_KEY", "vendors.deepgram.api_key"),
    ("SWITCHBOARD_DEEPGRAM_BASE_URL", "vendors.deepgram.base_url"),
    ("SWITCHBOARD_DEEPGRAM_MODEL", "vendors.deepgram.model"),
    ("SWITCHBOARD_OPENAI_API_KEY", "vendors.openai.api_key"),
    ("SWITCHBOARD_OPENAI_BASE_URL", "vendors.openai.base_url"),
    ("SWITCHBOARD_OPENAI_MODEL", "vendors.openai.model"),
    (
        "SWITCHBOARD_ELEVENLABS_API_KEY",
        "vendors.elevenlabs.api_key",
    ),
    (
        "SWITCHBOARD_ELEVENLABS_BASE_URL",
        "vendors.elevenlabs.base_url",
    ),
    ("SWITCHBOARD_ELEVENLABS_MODEL", "vendors.elevenlabs.model"),
    (
        "SWITCHBOARD_ELEVENLABS_VOICE_ID",
        "vendors.elevenlabs.voice_id",
    ),
    ("SWITCHBOARD_WHISPER_API_KEY", "vendors.whisper.api_key"),
    ("SWITCHBOARD_WHISPER_BASE_URL", "vendors.whisper.base_url"),
    ("SWITCHBOARD_WHISPER_MODEL", "vendors.whisper.model"),
];

/// The vendors Switchboard has clients for, as named in settings and in
/// `SWITCHBOARD_<VENDOR>_*` variables.
pub const VENDORS: [&str; 4] = ["deepgram", "openai", "elevenlabs", "whisper"];

/// The validated configuration of one Switchboard process.
#[derive(Clone)]
pub struct Settings {
    /// Socket address the HTTP server binds (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Base URL Twilio and browsers use to reach us; webhook signatures are
    /// checked against URLs rebuilt from it, never from proxy headers.
    pub public_url: url_base::BaseUrl,
    /// Where Switchboard keeps its private state: the managed PostgreSQL
    /// cluster, the generated master key, downloaded models.
    pub data_dir: PathBuf,
    /// How long live calls may drain after SIGTERM before they are cut.
    pub shutdown_grace: std::time::Duration,
    /// Which speech and language providers calls use.
    pub providers: ProviderMode,
    /// Log output settings.
    pub log: LogSettings,
    /// Database connection settings.
    pub database: DatabaseSettings,
    /// Keys that seal provider credentials at rest.
    pub secrets: SecretSettings,
    /// The platform's Twilio account and the call-token lifetime.
    pub twilio: TwilioSettings,
    /// The platform's accounts at the speech and language vendors.
    pub vendors: BTreeMap<&'static str, VendorAccount>,
    /// Where calls read caller memory.
    pub memory: MemorySettings,
    /// Whether this server runs the background jobs (post-call work,
    /// retention). Off for nodes that only serve calls and APIs while a
    /// separate worker runs the jobs.
    pub run_jobs: bool,
}

/// Where the call orchestrator reaches caller memory: in this process
/// (the default), or a separately deployed memory service over HTTP.
#[derive(Clone, Default)]
pub struct MemorySettings {
    /// Base URL of a separate memory service; `None` reads memory in
    /// process, from this server's own database.
    pub url: Option<url::Url>,
    /// A service key (`apikey create --service`) for that memory service;
    /// set exactly when `url` is.
    pub service_key: Option<SecretString>,
}

/// The platform's account at one vendor. A vendor is used only when its
/// account has a key (Whisper servers, often self-hosted, need only a base
/// URL). Tenants may bring their own key instead (`credentials set`).
#[derive(Clone, Default)]
pub struct VendorAccount {
    /// The API key.
    pub api_key: Option<SecretString>,
    /// Base URL overriding the vendor's public endpoint (self-hosted
    /// compatible servers, tests).
    pub base_url: Option<url::Url>,
    /// Default model.
    pub model: Option<String>,
    /// Default voice (ElevenLabs).
    pub voice_id: Option<String>,
}

impl VendorAccount {
    /// Whether the platform can use this vendor.
    pub fn is_configured(&self, vendor: &str) -> bool {
        self.api_key.is_some() || (vendor == "whisper" && self.base_url.is_some())
    }
}

/// The platform's own Twilio account. Tenants that bring their own account
/// store its credential per tenant instead (provider `twilio`).
#[derive(Clone)]
pub struct TwilioSettings {
    /// The platform account's `AccountSid` (`AC` + 32 hex digits); `None`
    /// when the platform has no Twilio account (only BYOK tenants ring).
    pub account_sid: Option<String>,
    /// The platform account's auth token: it signs Twilio's webhooks to us
    /// and authenticates our REST calls. Set exactly when `account_sid` is.
    pub auth_token: Option<SecretString>,
    /// Base URL of Twilio's REST API; tests point it at a fake.
    pub api_base: url_base::BaseUrl,
    /// How long a call token minted by the voice webhook stays valid; it
    /// only has to outlive the gap between our TwiML and the stream `start`.
    pub call_token_ttl: std::time::Duration,
}

/// Whether `sid` looks like a Twilio AccountSid: `AC` and 32 hex digits.
pub fn is_account_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("AC") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Which providers serve calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderMode {
    /// Scripted, deterministic providers with no added latency: a 1 s
    /// greeting, a 2 s reply per caller turn. For tests, benchmarks and
    /// side-by-side runs that measure orchestration alone.
    Fake,
    /// The local models only (Moonshine, SmolLM2, flite): no keys, no
    /// network.
    Offline,
    /// The vendors whose platform accounts are configured (or a tenant's
    /// own keys), each falling back to the local model of its role; the
    /// local models alone when no vendor is configured. The default.
    Auto,
}

impl ProviderMode {
    /// Parses `fake`, `offline` or `auto`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "fake" => Ok(Self::Fake),
            "offline" | "local" => Ok(Self::Offline),
            "auto" => Ok(Self::Auto),
            other => Err(ConfigError::invalid(
                "providers",
                format!("`{other}` is not a provider mode (available: auto, offline, fake)"),
            )),
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fake => "fake",
            Self::Offline => "offline",
            Self::Auto => "auto",
        }
    }
}

/// Log output settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive such as `info` or `switchboard=debug`.
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Compact coloured lines for terminals.
    Human,
    /// One JSON object per line for log shippers.
    Json,
}

/// Where the database is and who we are on it.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// The application role's URL (NOSUPERUSER, NOBYPASSRLS). `None` runs a
    /// private cluster under the data directory.
    pub url: Option<SecretString>,
    /// The owner role's URL, used only to run migrations.
    pub owner_url: Option<SecretString>,
    /// A role allowed to create roles and databases, used only to bootstrap
    /// a configured server on first run. Optional.
    pub admin_url: Option<SecretString>,
    /// Pool size of the application role's pool.
    pub max_connections: u32,
    /// PostgreSQL server binaries for the private cluster (auto-detected).
    pub postgres_bin_dir: Option<PathBuf>,
}

/// Master keys for credential sealing.
#[derive(Clone)]
pub struct SecretSettings {
    /// The current 32-byte master key. `None` means "use or create
    /// `<data_dir>/master.key`", which suits a single machine only.
    pub master_key: Option<MasterKey>,
    /// Version number of the current key; stored beside each sealed secret.
    pub master_key_version: u32,
    /// Older keys by version, kept so that `keys rotate` can re-seal.
    pub previous_master_keys: BTreeMap<u32, MasterKey>,
}

/// A 32-byte key that never prints.
#[derive(Clone)]
pub struct MasterKey(std::sync::Arc<secrecy::SecretBox<[u8; 32]>>);

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(std::sync::Arc::new(secrecy::SecretBox::new(Box::new(
            bytes,
        ))))
    }

    /// Parses standard base64 (with or without padding) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, ConfigError> {
        let trimmed = text.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
            .map_err(|_| ConfigError::invalid("secrets.master_key", "is not valid base64"))?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| {
            ConfigError::invalid("secrets.master_key", "must decode to exactly 32 bytes")
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key bytes, for the cipher only.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file we tried.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown keys.
    #[error("configuration file {path} is invalid: {message}")]
    Parse {
        /// The file we parsed.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
    /// A value is present but wrong.
    #[error("setting `{key}` {problem}")]
    Invalid {
        /// Dotted setting name.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// The file layer, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    shutdown_grace_secs: Option<u64>,
    providers: Option<String>,
    run_jobs: Option<bool>,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    secrets: FileSecrets,
    #[serde(default)]
    twilio: FileTwilio,
    #[serde(default)]
    vendors: BTreeMap<String, FileVendor>,
    #[serde(default)]
    memory: FileMemory,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMemory {
    url: Option<String>,
    service_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVendor {
    api_key: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    voice_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTwilio {
    account_sid: Option<String>,
    auth_token: Option<String>,
    api_base: Option<String>,
    call_token_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    owner_url: Option<String>,
    admin_url: Option<String>,
    max_connections: Option<u32>,
    postgres_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecrets {
    master_key: Option<String>,
    master_key_version: Option<u32>,
    #[serde(default)]
    previous_master_keys: BTreeMap<String, String>,
}

/// Where variables come from: the process environment, or a map in tests.
pub trait EnvSource {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

impl Settings {
    /// Loads settings from the process environment and the configuration
    /// file it points at (or `explicit_file`).
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(explicit_file, &ProcessEnv)
    }

    /// Loads settings with an explicit environment (for tests).
    pub fn load_from(
        explicit_file: Option<&Path>,
        env: &dyn EnvSource,
    ) -> Result<Self, ConfigError> {
        let file_path = explicit_file
            .map(Path::to_path_buf)
            .or_else(|| env.var("SWITCHBOARD_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let default = PathBuf::from("switchboard.toml");
                default.exists().then_some(default)
            });
        let file = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileSettings>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.message().to_string(),
                })?
            }
            None => FileSettings::default(),
        };
        Self::merge(file, env)
    }

    fn merge(file: FileSettings, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let listen_text = env
            .var("SWITCHBOARD_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::invalid(
                "listen",
                format!("`{listen_text}` is not an IP:port address"),
            )
        })?;

        let public_text = env
            .var("SWITCHBOARD_PUBLIC_URL")
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = url_base::BaseUrl::parse(&public_text)
            .map_err(|problem| ConfigError::invalid("public_url", problem))?;

        let data_dir = env
            .var("SWITCHBOARD_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(".switchboard"));

        let grace_secs = match env.var("SWITCHBOARD_SHUTDOWN_GRACE_SECS") {
            Some(v) => parse_number::<u64>("shutdown_grace_secs", &v)?,
            None => file.shutdown_grace_secs.unwrap_or(30),
        };
        if grace_secs > 3600 {
            return Err(ConfigError::invalid(
                "shutdown_grace_secs",
                "must be at most 3600",
            ));
        }

        let format_text = env
            .var("SWITCHBOARD_LOG_FORMAT")
            .or(file.log.format)
            .unwrap_or_else(|| "human".to_string());
        let format = match format_text.to_ascii_lowercase().as_str() {
            "human" | "pretty" | "text" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is neither `human` nor `json`"),
                ))
            }
        };
        let level = env
            .var("SWITCHBOARD_LOG_LEVEL")
            .or(file.log.level)
            .unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("`{level}` is not a valid filter directive"),
            ));
        }

        let secret = |var: &str, file_value: Option<String>| {
            env.var(var).or(file_value).map(SecretString::from)
        };
        let database = DatabaseSettings {
            url: secret("SWITCHBOARD_DATABASE_URL", file.database.url),
            owner_url: secret("SWITCHBOARD_DATABASE_OWNER_URL", file.database.owner_url),
            admin_url: secret("SWITCHBOARD_DATABASE_ADMIN_URL", file.database.admin_url),
            max_connections: match env.var("SWITCHBOARD_DATABASE_MAX_CONNECTIONS") {
                Some(v) => parse_number("database.max_connections", &v)?,
                None => file.database.max_connections.unwrap_or(10),
            },
            postgres_bin_dir: env
                .var("SWITCHBOARD_POSTGRES_BIN_DIR")
                .map(PathBuf::from)
                .or(file.database.postgres_bin_dir),
        };
        if !(1..=500).contains(&database.max_connections) {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be between 1 and 500",
            ));
        }
        for (key, value) in [
            ("database.url", &database.url),
            ("database.owner_url", &database.owner_url),
            ("database.admin_url", &database.admin_url),
        ] {
            if let Some(v) = value {
                let text = v.expose_secret();
                if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
                    return Err(ConfigError::invalid(
                        key,
                        "must be a postgres:// or postgresql:// URL",
                    ));
                }
            }
        }
        if database.url.is_some() != database.owner_url.is_some() {
            return Err(ConfigError::invalid(
                "database.owner_url",
                "must be set together with database.url (the owner runs migrations, the \
                 application role serves); set neither to use the private cluster",
            ));
        }

        let master_key = env
            .var("SWITCHBOARD_MASTER_KEY")
            .or(file.secrets.master_key)
            .map(|text| MasterKey::from_base64(&text))
            .transpose()?;
        let master_key_version = match env.var("SWITCHBOARD_MASTER_KEY_VERSION") {
            Some(v) => parse_number("secrets.master_key_version", &v)?,
            None => file.secrets.master_key_version.unwrap_or(1),
        };
        if master_key_version == 0 {
            return Err(ConfigError::invalid(
                "secrets.master_key_version",
                "must be 1 or more",
            ));
        }
        let mut previous_master_keys = BTreeMap::new();
        let mut add_previous = |version: &str, key: &str| -> Result<(), ConfigError> {
            let version: u32 = parse_number("secrets.previous_master_keys", version)?;
            if version == master_key_version {
                return Err(ConfigError::invalid(
                    "secrets.previous_master_keys",
                    format!("lists version {version}, which is the current version"),
                ));
            }
            previous_master_keys.insert(version, MasterKey::from_base64(key)?);
            Ok(())
        };
        match env.var("SWITCHBOARD_PREVIOUS_MASTER_KEYS") {
            // "1:base64,2:base64"
            Some(list) => {
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (version, key) = item.split_once(':').ok_or_else(|| {
                        ConfigError::invalid(
                            "secrets.previous_master_keys",
                            "must be a comma-separated list of VERSION:BASE64KEY",
                        )
                    })?;
                    add_previous(version, key)?;
                }
            }
            None => {
                for (version, key) in &file.secrets.previous_master_keys {
                    add_previous(version, key)?;
                }
            }
        }

        let twilio = Self::merge_twilio(file.twilio, env)?;
        let providers = ProviderMode::parse(
            &env.var("SWITCHBOARD_PROVIDERS")
                .or(file.providers)
                .unwrap_or_else(|| "auto".to_string()),
        )?;
        let vendors = Self::merge_vendors(file.vendors, env)?;
        let memory = Self::merge_memory(file.memory, env)?;
        let run_jobs = match env.var("SWITCHBOARD_RUN_JOBS") {
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                other => {
                    return Err(ConfigError::invalid(
                        "run_jobs",
                        format!("`{other}` is not true or false"),
                    ))
                }
            },
            None => file.run_jobs.unwrap_or(true),
        };

        Ok(Settings {
            listen,
            public_url,
            data_dir,
            shutdown_grace: std::time::Duration::from_secs(grace_secs),
            log: LogSettings { format, level },
            database,
            secrets: SecretSettings {
                master_key,
                master_key_version,
                previous_master_keys,
            },
            twilio,
            providers,
            vendors,
            memory,
            run_jobs,
        })
    }

    fn merge_memory(file: FileMemory, env: &dyn EnvSource) -> Result<MemorySettings, ConfigError> {
        let pick = |var: &str, file_value: Option<String>| {
            env.var(var)
                .or(file_value)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let url = pick("SWITCHBOARD_MEMORY_URL", file.url)
            .map(|text| match url::Url::parse(&text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
                _ => Err(ConfigError::invalid(
                    "memory.url",
                    format!("`{text}` is not an http(s) URL"),
                )),
            })
            .transpose()?;
        let service_key =
            pick("SWITCHBOARD_MEMORY_SERVICE_KEY", file.service_key).map(SecretString::from);
        if url.is_some() != service_key.is_some() {
            return Err(ConfigError::invalid(
                "memory.service_key",
                "must be set together with memory.url (a service key of the memory service); \
                 set neither to read memory in process",
            ));
        }
        Ok(MemorySettings { url, service_key })
    }

    fn merge_vendors(
        mut file: BTreeMap<String, FileVendor>,
        env: &dyn EnvSource,
    ) -> Result<BTreeMap<&'static str, VendorAccount>, ConfigError> {
        if let Some(unknown) = file.keys().find(|k| !VENDORS.contains(&k.as_str())) {
            return Err(ConfigError::invalid(
                "vendors",
                format!(
                    "names `{unknown}`, which is not a vendor (known: {})",
                    VENDORS.join(", ")
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for vendor in VENDORS {
            let from_file = file.remove(vendor).unwrap_or_default();
            let upper = vendor.to_ascii_uppercase();
            let pick = |field: &str, file_value: Option<String>| {
                env.var(&format!("SWITCHBOARD_{upper}_{field}"))
                    .or(file_value)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            };
            let base_url = match pick("BASE_URL", from_file.base_url) {
                Some(text) => Some(url::Url::parse(&text).map_err(|e| {
                    ConfigError::invalid(
                        "vendors.*.base_url",
                        format!("`{text}` is not a URL ({e})"),
                    )
                })?),
                None => None,
            };
            out.insert(
                vendor,
                VendorAccount {
                    api_key: pick("API_KEY", from_file.api_key).map(SecretString::from),
                    base_url,
                    model: pick("MODEL", from_file.model),
                    voice_id: pick("VOICE_ID", from_file.voice_id),
                },
            );
        }
        Ok(out)
    }

    fn merge_twilio(file: FileTwilio, env: &dyn EnvSource) -> Result<TwilioSettings, ConfigError> {
        let account_sid = env
            .var("SWITCHBOARD_TWILIO_ACCOUNT_SID")
            .or(file.account_sid)
            .map(|sid| sid.trim().to_string());
        if let Some(sid) = &account_sid {
            if !is_account_sid(sid) {
                return Err(ConfigError::invalid(
                    "twilio.account_sid",
                    "must be AC followed by 32 hex digits",
                ));
            }
        }
        let auth_token = env
            .var("SWITCHBOARD_TWILIO_AUTH_TOKEN")
            .or(file.auth_token)
            .map(|token| SecretString::from(token.trim().to_string()));
        if auth_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().is_empty())
        {
            return Err(ConfigError::invalid(
                "twilio.auth_token",
                "must not be empty",
            ));
        }
        if account_sid.is_some() != auth_token.is_some() {
            return Err(ConfigError::invalid(
                "twilio.auth_token",
                "must be set together with twilio.account_sid",
            ));
        }
        let api_text = env
            .var("SWITCHBOARD_TWILIO_API_BASE")
            .or(file.api_base)
            .unwrap_or_else(|| "https://api.twilio.com".to_string());
        let api_base = url_base::BaseUrl::parse(&api_text)
            .map_err(|problem| ConfigError::invalid("twilio.api_base", problem))?;
        let ttl_secs = match env.var("SWITCHBOARD_TWILIO_CALL_TOKEN_TTL_SECS") {
            Some(v) => parse_number::<u64>("twilio.call_token_ttl_secs", &v)?,
            None => file.call_token_ttl_secs.unwrap_or(120),
        };
        if !(10..=3600).contains(&ttl_secs) {
            return Err(ConfigError::invalid(
                "twilio.call_token_ttl_secs",
                "must be between 10 and 3600",
            ));
        }
        Ok(TwilioSettings {
            account_sid,
            auth_token,
            api_base,
            call_token_ttl: std::time::Duration::from_secs(ttl_secs),
        })
    }

    /// Whether Switchboard runs its own private PostgreSQL cluster.
    pub fn uses_private_cluster(&self) -> bool {
        self.database.url.is_none()
    }

    /// The effective configuration as TOML, secrets masked. Printed by
    /// `switchboard config check`.
    pub fn render_masked(&self) -> String {
        let mask_url = |key: &str, v: &Option<SecretString>| match v {
            Some(url) => format!("{key} = \"{}\"\n", mask_database_url(url.expose_secret())),
            None => format!("# {key}: not set\n"),
        };
        let mut out = String::new();
        out.push_str(&format!("listen = \"{}\"\n", self.listen));
        out.push_str(&format!("public_url = \"{}\"\n", self.public_url));
        out.push_str(&format!("data_dir = \"{}\"\n", self.data_dir.display()));
        out.push_str(&format!(
            "shutdown_grace_secs = {}\nproviders = \"{}\"\nrun_jobs = {}\n\n[log]\n",
            self.shutdown_grace.as_secs(),
            self.providers.as_str(),
            self.run_jobs
        ));
        let format = match self.log.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        out.push_str(&format!(
            "format = \"{format}\"\nlevel = \"{}\"\n\n",
            self.log.level
        ));
        out.push_str("[database]\n");
        if self.uses_private_cluster() {
            out.push_str(&format!(
                "# private PostgreSQL cluster under {}\n",
                self.data_dir.join("postgres").display()
            ));
        }
        out.push_str(&mask_url("url", &self.database.url));
        out.push_str(&mask_url("owner_url", &self.database.owner_url));
        out.push_str(&mask_url("admin_url", &self.database.admin_url));
        out.push_str(&format!(
            "max_connections = {}\n",
            self.database.max_connections
        ));
        match &self.database.postgres_bin_dir {
            Some(dir) => out.push_str(&format!("postgres_bin_dir = \"{}\"\n", dir.display())),
            None => out.push_str("# postgres_bin_dir: auto-detected\n"),
        }
        out.push_str("\n[secrets]\n");
        match &self.secrets.master_key {
            Some(_) => out.push_str("master_key = \"********\"\n"),
            None => out.push_str(&format!(
                "# master_key: not set; using {}\n",
                self.data_dir.join("master.key").display()
            )),
        }
        out.push_str(&format!(
            "master_key_version = {}\n",
            self.secrets.master_key_version
        ));
        let versions: Vec<String> = self
            .secrets
            .previous_master_keys
            .keys()
            .map(|v| format!("\"{v}\" = \"********\""))
            .collect();
        out.push_str(&format!(
            "previous_master_keys = {{ {} }}\n",
            versions.join(", ")
        ));
        out.push_str("\n[twilio]\n");
        match &self.twilio.account_sid {
            Some(sid) => out.push_str(&format!("account_sid = \"{sid}\"\n")),
            None => out.push_str("# account_sid: not set (no platform Twilio account)\n"),
        }
        match &self.twilio.auth_token {
            Some(_) => out.push_str("auth_token = \"********\"\n"),
            None => out.push_str("# auth_token: not set\n"),
        }
        out.push_str(&format!("api_base = \"{}\"\n", self.twilio.api_base));
        out.push_str(&format!(
            "call_token_ttl_secs = {}\n",
            self.twilio.call_token_ttl.as_secs()
        ));
        out.push_str("\n[memory]\n");
        match &self.memory.url {
            Some(url) => out.push_str(&format!("url = \"{url}\"\nservice_key = \"********\"\n")),
            None => out.push_str("# url: not set (caller memory is read in process)\n"),
        }
        for (vendor, account) in &self.vendors {
            out.push_str(&format!("\n[vendors.{vendor}]\n"));
            match &account.api_key {
                Some(_) => out.push_str("api_key = \"********\"\n"),
                None => out.push_str("# api_key: not set\n"),
            }
            if let Some(url) = &account.base_url {
                out.push_str(&format!("base_url = \"{url}\"\n"));
            }
            if let Some(model) = &account.model {
                out.push_str(&format!("model = \"{model}\"\n"));
            }
            if let Some(voice) = &account.voice_id {
                out.push_str(&format!("voice_id = \"{voice}\"\n"));
            }
        }
        out
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_masked())
    }
}

/// Replaces the password of a `postgres://user:password@host/db` URL.
pub fn mask_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "********".to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    let masked_tail = mask_query_password(tail);
    if userinfo.contains(':') {
        format!("{scheme}://{user}:********@{host}{masked_tail}")
    } else {
        format!("{scheme}://{user}@{host}{masked_tail}")
    }
}

fn mask_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=********"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

fn parse_number<T: std::str::FromStr>(key: &'static str, text: &str) -> Result<T, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(key, format!("`{text}` is not a valid number")))
}

/// A validated absolute `http(s)://host[:port][/path]` base URL without a
/// query or fragment, stored without a trailing slash.
pub mod url_base {
    use std::fmt;

    /// See the module documentation.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct BaseUrl(String);

    impl BaseUrl {
        /// Validates and normalises `text`.
        pub fn parse(text: &str) -> Result<Self, String> {
            let text = text.trim().trim_end_matches('/');
            let rest = text
                .strip_prefix("https://")
                .or_else(|| text.strip_prefix("http://"))
                .ok_or_else(|| format!("`{text}` must start with http:// or https://"))?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("`{text}` has no host"));
            }
            if rest.contains(['?', '#', ' ']) {
                return Err(format!(
                    "`{text}` must not contain a query, fragment or space"
                ));
            }
            Ok(Self(text.to_string()))
        }

        /// The URL for `path` (which starts with `/`) under this base.
        pub fn join(&self, path: &str) -> String {
            format!("{}{path}", self.0)
        }

        /// The same URL with the scheme swapped to its websocket twin.
        pub fn websocket(&self, path: &str) -> String {
            let joined = self.join(path);
            if let Some(rest) = joined.strip_prefix("https://") {
                format!("wss://{rest}")
            } else if let Some(rest) = joined.strip_prefix("http://") {
                format!("ws://{rest}")
            } else {
                joined
            }
        }

        /// The base as a string slice.
        pub fn as_str(&self) -> &str {
            &self.0
        }
    }

    impl fmt::Display for BaseUrl {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_use_the_private_cluster() {
        let s = Settings::merge(FileSettings::default(), &env(&[])).expect("defaults are valid");
        assert!(s.uses_private_cluster());
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url.as_str(), "http://127.0.0.1:8080");
        assert_eq!(s.log.format, LogFormat::Human);
    }

    #[test]
    fn environment_overrides_the_file() {
        let file: FileSettings =
            toml::from_str("listen = \"0.0.0.0:9000\"\n[log]\nformat = \"human\"\n")
                .expect("valid toml");
        let s = Settings::merge(
            file,
            &env(&[
                ("SWITCHBOARD_LISTEN", "127.0.0.1:7000"),
                ("SWITCHBOARD_LOG_FORMAT", "json"),
                ("SWITCHBOARD_PUBLIC_URL", "https://voice.example.com/"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.public_url.as_str(), "https://voice.example.com");
        assert_eq!(
            s.public_url.websocket("/twilio/media"),
            "wss://voice.example.com/twilio/media"
        );
    }

    #[test]
    fn a_memory_service_needs_both_its_url_and_a_service_key() {
        let only_url = Settings::merge(
            FileSettings::default(),
            &env(&[("SWITCHBOARD_MEMORY_URL", "https://memory.internal")]),
        );
        assert!(only_url.is_err());
        let bad_url = Settings::merge(
            FileSettings::default(),
            &env(&[
                ("SWITCHBOARD_MEMORY_URL", "memory.internal"),
                ("SWITCHBOARD_MEMORY_SERVICE_KEY", "k"),
            ]),
        );
        assert!(bad_url.is_err());
        let in_process = Settings::merge(FileSettings::default(), &env(&[])).expect("valid");
        assert!(in_process.memory.url.is_none());
    }

    #[test]
    fn secrets_never_print() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let s = Settings::merge(
            FileSettings::default(),
            &env(&[
                ("SWITCHBOARD_DATABASE_URL", "postgres://app:hunter2@db/sb"),
                (
                    "SWITCHBOARD_DATABASE_OWNER_URL",
                    "postgres://own:swordfish@db/sb?password=x",
                ),
                ("SWITCHBOARD_MASTER_KEY", &key),
                ("SWITCHBOARD_PREVIOUS_MASTER_KEYS", &format!("7:{key}")),
                (
                    "SWITCHBOARD_TWILIO_ACCOUNT_SID",
                    "AC0123456789abcdef0123456789abcdef",
                ),
                ("SWITCHBOARD_TWILIO_AUTH_TOKEN", "twilio-token-sekrit"),
                ("SWITCHBOARD_MEMORY_URL", "https://memory.internal:8443"),
                ("SWITCHBOARD_MEMORY_SERVICE_KEY", "sbk_s_memory-sekrit"),
            ]),
        )
        .expect("valid");
        let shown = format!("{s:?}\n{}", s.render_masked());
        assert!(
            shown.contains("url = \"https://memory.internal:8443/\""),
            "{shown}"
        );
        assert!(shown.contains("account_sid = \"AC0123456789abcdef0123456789abcdef\""));
        assert!(shown.contains("auth_token = \"********\""));
        for secret in [
            "hunter2",
            "swordfish",
            key.as_str(),
            "password=x",
            "twilio-token-sekrit",
            "memory-sekrit",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
        }
        assert!(shown.contains("postgres://app:********@db/sb"));
        assert!(s.secrets.previous_master_keys.contains_key(&7));
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("SWITCHBOARD_LISTEN", "nowhere", "listen"),
            ("SWITCHBOARD_PUBLIC_URL", "ftp://x", "public_url"),
            ("SWITCHBOARD_LOG_FORMAT", "xml", "log.format"),
            ("SWITCHBOARD_MASTER_KEY", "c2hvcnQ=", "secrets.master_key"),
            (
                "SWITCHBOARD_DATABASE_MAX_CONNECTIONS",
                "0",
                "database.max_connections",
            ),
            (
                "SWITCHBOARD_DATABASE_URL",
                "postgres://a@b/c",
                "database.owner_url",
            ),
            (
                "SWITCHBOARD_TWILIO_ACCOUNT_SID",
                "AC123",
                "twilio.account_sid",
            ),
            (
                "SWITCHBOARD_TWILIO_ACCOUNT_SID",
                "AC0123456789abcdef0123456789abcdef",
                "twilio.auth_token",
            ),
            ("SWITCHBOARD_TWILIO_AUTH_TOKEN", "tok", "twilio.auth_token"),
            (
                "SWITCHBOARD_TWILIO_API_BASE",
                "api.twilio.com",
                "twilio.api_base",
            ),
            (
                "SWITCHBOARD_TWILIO_CALL_TOKEN_TTL_SECS",
                "5",
                "twilio.call_token_ttl_secs",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::merge(FileSettings::default(), &env(&[(var, value)]))
                .err()
                .unwrap_or_else(|| panic!("{var}={value} should be rejected"));
            assert!(err.to_string().contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn twilio_defaults_and_file_values() {
        let s = Settings::merge(FileSettings::default(), &env(&[])).expect("defaults");
        assert!(s.twilio.account_sid.is_none() && s.twilio.auth_token.is_none());
        assert_eq!(s.twilio.api_base.as_str(), "https://api.twilio.com");
        assert_eq!(s.twilio.call_token_ttl.as_secs(), 120);
        let file: FileSettings = toml::from_str(
            "[twilio]\naccount_sid = \"ACffffffffffffffffffffffffffffffff\"\n\
             auth_token = \"t0ken\"\napi_base = \"http://127.0.0.1:9/\"\n\
             call_token_ttl_secs = 60\n",
        )
        .expect("valid toml");
        let s = Settings::merge(file, &env(&[])).expect("valid");
        assert_eq!(
            s.twilio.account_sid.as_deref(),
            Some("ACffffffffffffffffffffffffffffffff")
        );
        assert_eq!(
            s.twilio.auth_token.as_ref().map(|t| t.expose_secret()),
            Some("t0ken")
        );
        assert_eq!(s.twilio.api_base.as_str(), "http://127.0.0.1:9");
        assert_eq!(s.twilio.call_token_ttl.as_secs(), 60);
        assert!(toml::from_str::<FileSettings>("[twilio]\nauthtoken = \"x\"").is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileSettings>("lisen = \"x\"").is_err());
    }
}
