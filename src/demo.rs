//! `switchboard demo`: the offline quick start. For now it prepares the
//! database and the demo tenants from `fixtures/tenants/*.toml`, prints
//! them, and exits; later work places scripted calls against them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::configuration::Settings;
use crate::platform::{CreateTenant, PlatformError};
use crate::startup::Runtime;

/// The audit actor for demo changes.
const DEMO_ACTOR: &str = "demo";

/// Runs the demo; `fixtures` overrides the tenant fixture directory.
pub async fn run(settings: Settings, fixtures: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = fixtures.unwrap_or_else(default_fixture_dir);
    let tenants = load_fixtures(&dir)?;
    if settings.uses_private_cluster() {
        println!(
            "Switchboard demo: starting the private PostgreSQL cluster in {} (the first run initialises it)…",
            settings.data_dir.join("postgres").display()
        );
    } else {
        println!("Switchboard demo: preparing the configured database…");
    }
    let runtime = Runtime::open(&settings).await?;
    let result = create_all(&runtime, tenants).await;
    runtime.close().await?;
    result?;
    println!("\nDemo tenants are ready. Next: `switchboard tenant list`, or `switchboard serve` and GET /healthz.");
    Ok(())
}

async fn create_all(
    runtime: &Runtime,
    tenants: Vec<(PathBuf, CreateTenant)>,
) -> anyhow::Result<()> {
    for (path, tenant) in tenants {
        let slug = tenant.slug.clone();
        match runtime.platform.create_tenant(DEMO_ACTOR, tenant).await {
            Ok(created) => println!(
                "  created {:<14} {} [{}] numbers: {}",
                created.customer.slug,
                created.customer.name,
                created.customer.template_slug,
                created
                    .numbers
                    .iter()
                    .map(|n| n.e164.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(PlatformError::Conflict(_)) => println!("  kept    {slug:<14} (already present)"),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("could not create the tenant in {}", path.display()))
            }
        }
    }
    for t in runtime.platform.list_tenants().await? {
        println!(
            "  tenant  {:<14} {:<30} status={} numbers={}",
            t.slug, t.name, t.status, t.numbers
        );
    }
    Ok(())
}

/// `./fixtures/tenants` when run from a checkout, else the copy beside the
/// sources this binary was built from.
fn default_fixture_dir() -> PathBuf {
    let local = PathBuf::from("fixtures/tenants");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tenants")
    }
}

/// Reads every `*.toml` tenant fixture in `dir`, sorted by file name.
pub fn load_fixtures(dir: &Path) -> anyhow::Result<Vec<(PathBuf, CreateTenant)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read tenant fixtures in {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!("no tenant fixtures (*.toml) in {}", dir.display());
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let tenant: CreateTenant = toml::from_str(&text)
                .with_context(|| format!("invalid tenant fixture {}", path.display()))?;
            Ok((path, tenant))
        })
        .collect()
}
