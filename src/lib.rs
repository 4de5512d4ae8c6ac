//! Switchboard: a multi-tenant AI phone-answering platform.
//!
//! The crate is layered so that each concern has one home:
//!
//! | module          | owns                                                              |
//! |-----------------|-------------------------------------------------------------------|
//! | [`configuration`] | typed settings from a TOML file and `SWITCHBOARD_*` variables, secrets wrapped |
//! | [`telemetry`]   | tracing subscriber (human or JSON)                                |
//! | [`db`]          | connection pools, role checks, migrations, the private PostgreSQL cluster, [`db::TenantTx`] |
//! | [`repo`]        | tenant-scoped repository functions; each takes a [`db::TenantTx`] |
//! | [`jobs`]        | the durable job queue (post-call work): enqueue, runner, crash recovery |
//! | [`memory`]      | caller memory: the caller card, the memory service and client, the memory API |
//! | [`providers`]   | STT, LLM and TTS as the call driver sees them; scripted fakes |
//! | [`models`]      | the offline models: pinned wheels, download, verification, install |
//! | [`platform`]    | platform operations (tenants, numbers, users, keys, credentials) shared by CLI and API, and the narrow cross-tenant directory |
//! | [`crypto`]      | credential sealing (XChaCha20-Poly1305), API keys, password hashing |
//! | [`http`]        | the axum router: health, readiness, platform API, error mapping   |
//! | [`startup`]     | building and running the server, graceful shutdown               |
//! | [`twilio`]      | the Twilio HTTP edge: request signatures, TwiML, call tokens, voice and status webhooks |
//! | [`call`]        | one call: Twilio Media Streams messages and the sans-IO `CallSession` |
//! | [`callsim`]     | a faithful Twilio simulator: signed webhook, media stream, real-time playout |
//! | [`cli`]         | the `switchboard` command line                                    |
//! | [`demo`]        | the offline demo                                                  |
//!
//! Tenant isolation is enforced by PostgreSQL row-level security: the only
//! way application code reaches tenant rows is a [`db::TenantTx`], a
//! transaction that has set `app.customer_id` transaction-locally.

pub mod call;
pub mod callsim;
pub mod cli;
pub mod configuration;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod http;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod platform;
pub mod providers;
pub mod repo;
pub mod startup;
pub mod telemetry;
pub mod twilio;
