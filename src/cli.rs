//! The `switchboard` command line: server, migrations, and the platform
//! team's tools. Each platform command calls the same operation as the
//! matching `/platform/api` route.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::configuration::Settings;
use crate::crypto::api_key::KeyScope;
use crate::platform::{CreateTenant, CreateUser, SetCredential};
use crate::startup::{self, Application, Runtime};
use crate::{demo, telemetry};

/// Multi-tenant AI phone answering.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// Configuration file (default: $SWITCHBOARD_CONFIG, else ./switchboard.toml if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, Twilio webhooks and the media websocket.
    Serve(ServeArgs),
    /// Place a simulated Twilio call against a running server.
    Callsim(CallsimArgs),
    /// Create roles and database if needed and apply migrations.
    Migrate,
    /// Run the offline demo: migrate, create the demo tenants from fixtures.
    Demo(DemoArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Assign and release phone numbers.
    #[command(subcommand)]
    Number(NumberCommand),
    /// Manage staff and platform users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Store a tenant's bring-your-own vendor credentials.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Master key operations.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Download and verify the offline models (speech and language).
    #[command(subcommand)]
    Models(crate::models::ModelsCommand),
}

/// `switchboard serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Call providers (overrides SWITCHBOARD_PROVIDERS): `fake`.
    #[arg(long, value_name = "MODE")]
    pub providers: Option<String>,
}

/// `switchboard callsim`.
#[derive(Debug, Args)]
pub struct CallsimArgs {
    /// The server to call (where the simulator connects).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The server's public URL, which signatures cover (default: its configured public_url).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Twilio AccountSid to present (default: the configured platform account).
    #[arg(long)]
    pub account_sid: Option<String>,
    /// Caller number.
    #[arg(long, default_value = "+15005550006")]
    pub from: String,
    /// Number to dial (a tenant's).
    #[arg(long)]
    pub to: String,
    /// Load mode: place this many concurrent calls (each repeats
    /// --utterance and waits for the answer, for --duration).
    #[arg(long)]
    pub calls: Option<usize>,
    /// Load mode: spread call starts over this long (e.g. 30s).
    #[arg(long, default_value = "10s")]
    pub ramp: String,
    /// Load mode: how long each call keeps talking (e.g. 60s).
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Load mode: the caller's utterance.
    #[arg(long, default_value = "fixtures/audio/question.wav")]
    pub utterance: PathBuf,
    /// Load mode: the server's pid, to report its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Mix this many malformed messages into the stream (robustness test).
    #[arg(long, default_value_t = 0)]
    pub fuzz: usize,
    /// Write the agent's audio here (8 kHz mu-law WAV).
    #[arg(long, value_name = "WAV")]
    pub record: Option<PathBuf>,
    /// The caller's script: --say A.wav --wait-agent --interrupt-after 1.2s B.wav --pause 2s --dtmf 0 --hangup
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SCRIPT"
    )]
    pub script: Vec<String>,
}

/// `switchboard demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of tenant fixture files (`*.toml`); the caller audio is
    /// read from `audio/` beside it.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Providers for the demo calls: `offline` (default: local models, no
    /// keys), `auto` (configured vendors) or `fake`.
    #[arg(long, value_name = "MODE")]
    pub providers: Option<String>,
    /// Where the agent's audio is written (default `<data_dir>/demo`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Benchmark instead: one call of N caller turns, then voice-to-voice
    /// latency p50/p95 (end of caller speech → first agent audio).
    #[arg(long, value_name = "N")]
    pub bench_turns: Option<usize>,
}

/// `switchboard config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate and print the effective configuration, secrets masked.
    Check,
}

/// `switchboard tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(TenantCreateArgs),
    /// List tenants with this month's usage.
    List(JsonFlag),
    /// Show one tenant in full.
    Show {
        /// Tenant slug.
        slug: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a tenant: its numbers reject calls.
    Suspend {
        /// Tenant slug.
        slug: String,
    },
    /// Resume a suspended tenant.
    Resume {
        /// Tenant slug.
        slug: String,
    },
    /// Replace a tenant's provider choices and settings, e.g.
    /// `'{"llm": {"provider": "local"}, "tts": {"provider": "elevenlabs"}}'`.
    SetProviders {
        /// Tenant slug.
        slug: String,
        /// The settings as one JSON object (see the README).
        settings: String,
    },
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `switchboard tenant create`.
#[derive(Debug, Args)]
pub struct TenantCreateArgs {
    /// Industry template (insurance, real_estate, law_firm, general).
    #[arg(long)]
    pub template: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Unique slug.
    #[arg(long)]
    pub slug: String,
    /// Phone number to assign (E.164; repeatable).
    #[arg(long = "number")]
    pub numbers: Vec<String>,
    /// The receptionist's name.
    #[arg(long)]
    pub agent_name: Option<String>,
    /// What the agent says when answering.
    #[arg(long)]
    pub greeting: Option<String>,
    /// Plan tier.
    #[arg(long)]
    pub plan: Option<String>,
    /// Monthly call limit.
    #[arg(long)]
    pub call_limit: Option<i32>,
    /// IANA time zone, e.g. America/Los_Angeles.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Number to transfer callers to.
    #[arg(long)]
    pub transfer_number: Option<String>,
}

/// `switchboard number …`.
#[derive(Debug, Subcommand)]
pub enum NumberCommand {
    /// Assign a number to a tenant.
    Assign {
        /// Tenant slug.
        slug: String,
        /// E.164 number.
        number: String,
    },
    /// Release a number from whichever tenant holds it.
    Release {
        /// E.164 number.
        number: String,
    },
}

/// `switchboard user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (one line)
    /// or generated and printed once.
    Create {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// platform-admin, admin, agent or viewer.
        #[arg(long)]
        role: String,
        /// Tenant slug (all roles but platform-admin).
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `switchboard apikey …`.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key; it is printed once, alone on the last line.
    Create(ApikeyCreateArgs),
}

/// `switchboard apikey create`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "scope")]
pub struct ApikeyCreateArgs {
    /// A platform key (the /platform/api surface).
    #[arg(long, group = "scope")]
    pub platform: bool,
    /// A service key (internal services; may name any customer).
    #[arg(long, group = "scope")]
    pub service: bool,
    /// A tenant key for this tenant slug (its own customer only).
    #[arg(long, group = "scope", value_name = "SLUG")]
    pub tenant: Option<String>,
    /// A label for the key.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

/// `switchboard credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Seal and store a vendor secret, read from standard input.
    Set {
        /// Tenant slug.
        slug: String,
        /// twilio, openai, elevenlabs or deepgram.
        #[arg(long)]
        provider: String,
        /// Non-secret id: the Twilio AccountSid.
        #[arg(long)]
        public_id: Option<String>,
        /// Non-secret setting KEY=VALUE (repeatable), e.g. base_url=…, model=….
        #[arg(long = "setting", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

/// `switchboard keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seal every credential under the current master key version.
    Rotate,
}

/// The actor name CLI changes are audited under.
const CLI_ACTOR: &str = "cli";

/// Parses arguments, runs the command, and maps failure to exit code 1.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    match execute(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Config(ConfigCommand::Check) => {
            print!("{}", settings.render_masked());
            Ok(())
        }
        Command::Serve(args) => {
            let mut settings = settings;
            if let Some(mode) = args.providers {
                settings.providers = crate::configuration::ProviderMode::parse(&mode)?;
            }
            let app = Application::build(settings).await?;
            app.run_until_stopped(startup::shutdown_signal()).await
        }
        Command::Demo(args) => {
            let providers = args
                .providers
                .as_deref()
                .map(crate::configuration::ProviderMode::parse)
                .transpose()?;
            demo::run(
                settings,
                demo::DemoOptions {
                    fixtures: args.fixtures,
                    providers,
                    out_dir: args.out,
                    bench_turns: args.bench_turns,
                },
            )
            .await
        }
        Command::Callsim(args) => callsim(settings, args).await,
        Command::Models(command) => crate::models::run_command(&settings.data_dir, command).await,
        other => {
            let runtime = Runtime::open(&settings).await?;
            let result = platform_command(&runtime, other).await;
            runtime.close().await?;
            result
        }
    }
}

async fn platform_command(runtime: &Runtime, command: Command) -> anyhow::Result<()> {
    let platform = &runtime.platform;
    match command {
        Command::Migrate => {
            println!("database is migrated and ready");
        }
        Command::Tenant(TenantCommand::Create(a)) => {
            let created = platform
                .create_tenant(
                    CLI_ACTOR,
                    CreateTenant {
                        slug: a.slug,
                        name: a.name,
                        template: a.template,
                        numbers: a.numbers,
                        agent_name: a.agent_name,
                        greeting: a.greeting,
                        plan_tier: a.plan,
                        monthly_call_limit: a.call_limit,
                        timezone: a.timezone,
                        transfer_number: a.transfer_number,
                        voice_id: None,
                        personality: None,
                        prohibited_topics: Vec::new(),
                    },
                )
                .await?;
            let c = &created.customer;
            println!("created tenant {} ({})", c.slug, c.customer_id);
            for n in &created.numbers {
                println!("  number {}", n.e164);
            }
        }
        Command::Tenant(TenantCommand::List(flag)) => {
            let tenants = platform.list_tenants().await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                println!(
                    "{:<20} {:<32} {:<10} {:<10} {:>7} {:>7} {:>9}",
                    "SLUG", "NAME", "STATUS", "PLAN", "NUMBERS", "CALLS", "MINUTES"
                );
                for t in &tenants {
                    println!(
                        "{:<20} {:<32} {:<10} {:<10} {:>7} {:>7} {:>9}",
                        t.slug,
                        truncate(&t.name, 32),
                        t.status,
                        t.plan_tier,
                        t.numbers,
                        t.calls_this_month,
                        minutes(t.call_seconds_this_month)
                    );
                }
                println!("{} tenant(s)", tenants.len());
            }
        }
        Command::Tenant(TenantCommand::Show { slug, json }) => {
            let details = platform.show_tenant(&slug).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&details)?);
            } else {
                let c = &details.customer;
                println!("{} ({})", c.name, c.slug);
                println!("  id:         {}", c.customer_id);
                println!("  status:     {}", c.status);
                println!(
                    "  plan:       {} (call limit {})",
                    c.plan_tier,
                    limit(c.monthly_call_limit)
                );
                println!("  template:   {} v{}", c.template_slug, c.template_version);
                println!("  agent:      {}", c.agent_name);
                println!("  greeting:   {}", c.greeting);
                println!("  timezone:   {}", c.timezone);
                println!(
                    "  transfer:   {}",
                    c.transfer_number.as_deref().unwrap_or("-")
                );
                for n in &details.numbers {
                    println!("  number:     {}", n.e164);
                }
                for cred in &details.credentials {
                    println!(
                        "  credential: {} {} (key v{})",
                        cred.provider, cred.secret_hint, cred.key_version
                    );
                }
                let u = &details.usage_this_month;
                println!(
                    "  this month: {} calls, {} refused, {} min",
                    u.calls,
                    u.refused_calls,
                    minutes(u.call_seconds)
                );
            }
        }
        Command::Tenant(TenantCommand::Suspend { slug }) => {
            platform
                .set_tenant_status(CLI_ACTOR, &slug, "suspended")
                .await?;
            println!("suspended {slug}");
        }
        Command::Tenant(TenantCommand::SetProviders { slug, settings }) => {
            let settings: serde_json::Value = serde_json::from_str(&settings)
                .map_err(|e| anyhow::anyhow!("the settings are not valid JSON: {e}"))?;
            let customer = platform
                .set_provider_settings(CLI_ACTOR, &slug, settings)
                .await?;
            println!(
                "provider settings of {slug}: {}",
                customer.provider_settings
            );
        }
        Command::Tenant(TenantCommand::Resume { slug }) => {
            platform
                .set_tenant_status(CLI_ACTOR, &slug, "active")
                .await?;
            println!("resumed {slug}");
        }
        Command::Number(NumberCommand::Assign { slug, number }) => {
            let n = platform.assign_number(CLI_ACTOR, &slug, &number).await?;
            println!("assigned {} to {slug}", n.e164);
        }
        Command::Number(NumberCommand::Release { number }) => {
            platform.release_number(CLI_ACTOR, &number).await?;
            println!("released {number}");
        }
        Command::User(UserCommand::Create {
            email,
            name,
            role,
            tenant,
            password_stdin,
        }) => {
            let (password, generated) = if password_stdin {
                (read_stdin_secret("password")?, false)
            } else {
                (SecretString::from(generate_password()), true)
            };
            let shown =
                generated.then(|| secrecy::ExposeSecret::expose_secret(&password).to_string());
            let user = platform
                .create_user(
                    CLI_ACTOR,
                    CreateUser {
                        email,
                        name,
                        role,
                        tenant,
                        password,
                    },
                )
                .await?;
            println!(
                "created {} {} {}",
                user.role,
                user.email,
                user.tenant.map(|t| format!("at {t}")).unwrap_or_default()
            );
            if let Some(p) = shown {
                println!("generated password (shown once): {p}");
            }
        }
        Command::Apikey(ApikeyCommand::Create(a)) => {
            let scope = if a.platform {
                KeyScope::Platform
            } else if a.service {
                KeyScope::Service
            } else {
                KeyScope::Tenant
            };
            let key = platform
                .create_api_key(CLI_ACTOR, scope, a.tenant.as_deref(), &a.name)
                .await?;
            println!(
                "created {} key {} ({}); it is shown once, store it now:",
                scope.as_str(),
                key.prefix,
                key.key_id
            );
            println!("{}", key.key);
        }
        Command::Credentials(CredentialsCommand::Set {
            slug,
            provider,
            public_id,
            settings,
        }) => {
            let mut map = serde_json::Map::new();
            for pair in settings {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--setting `{pair}` is not KEY=VALUE"))?;
                map.insert(
                    k.trim().to_string(),
                    serde_json::Value::String(v.trim().to_string()),
                );
            }
            let secret = read_stdin_secret("secret")?;
            let summary = platform
                .set_credential(
                    CLI_ACTOR,
                    &slug,
                    SetCredential {
                        provider,
                        secret,
                        public_id,
                        settings: map,
                    },
                )
                .await?;
            println!(
                "stored {} credential for {slug} ({}, sealed with key v{})",
                summary.provider, summary.secret_hint, summary.key_version
            );
        }
        Command::Keys(KeysCommand::Rotate) => {
            let n = platform.rotate_keys(CLI_ACTOR).await?;
            println!(
                "re-sealed {n} credential(s) under key v{}",
                platform.keyring().current_version()
            );
        }
        Command::Serve(_)
        | Command::Callsim(_)
        | Command::Demo(_)
        | Command::Config(_)
        | Command::Models(_) => {}
    }
    Ok(())
}

fn read_stdin_secret(what: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what}: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("could not read the {what} from standard input"))?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
    if trimmed.is_empty() {
        anyhow::bail!("no {what} on standard input");
    }
    Ok(SecretString::from(trimmed))
}

fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn limit(value: Option<i32>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn minutes(seconds: i64) -> i64 {
    (seconds + 59) / 60
}

async fn callsim(settings: Settings, args: CallsimArgs) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let script = crate::callsim::parse_script(&args.script)?;
    let account_sid = args
        .account_sid
        .or_else(|| settings.twilio.account_sid.clone())
        .context("no AccountSid: pass --account-sid or set SWITCHBOARD_TWILIO_ACCOUNT_SID")?;
    let auth_token = settings
        .twilio
        .auth_token
        .as_ref()
        .map(|t| t.expose_secret().to_string())
        .context("no auth token to sign with: set SWITCHBOARD_TWILIO_AUTH_TOKEN")?;
    let spec = crate::callsim::CallSpec {
        server: args.server,
        public_url: args
            .public_url
            .unwrap_or_else(|| settings.public_url.to_string()),
        account_sid,
        auth_token,
        from: args.from,
        to: args.to,
        call_sid: format!("CA{}", uuid::Uuid::new_v4().simple()),
        script,
        fuzz: args.fuzz,
    };
    if let Some(calls) = args.calls {
        let load = crate::callsim::load::LoadSpec {
            call: spec,
            calls,
            ramp: crate::callsim::parse_duration(&args.ramp)?,
            duration: crate::callsim::parse_duration(&args.duration)?,
            utterance: crate::callsim::load_ulaw(&args.utterance)?,
            server_pid: args.server_pid,
        };
        eprintln!("placing {calls} calls over {} …", args.ramp);
        let report = crate::callsim::load::run(load).await;
        print!("{}", crate::callsim::load::render(&report));
        if report.sustained < report.started || report.off_spec > 0 {
            anyhow::bail!(
                "{} of {} calls not sustained",
                report.started - report.sustained,
                report.started
            );
        }
        return Ok(());
    }
    let report = crate::callsim::place_call(&spec).await?;
    print!("{}", crate::callsim::render_report(&report));
    if let Some(path) = args.record {
        media::wav::write_ulaw(&path, &report.agent_audio)
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("agent audio written to {}", path.display());
    }
    if !report.off_spec.is_empty() {
        anyhow::bail!("{} off-spec frames from the server", report.off_spec.len());
    }
    Ok(())
}
