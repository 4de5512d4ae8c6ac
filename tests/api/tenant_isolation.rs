//! Tenant isolation under row-level security, tested through the application role.
//!
//! * A property test drives every tenant repository function with two tenants,
//!   A and B, that share a caller number, a staff email and a call sid, and
//!   checks that no read crosses tenants, that writes naming the other tenant
//!   are rejected (or affect nothing), and that a transaction without tenant
//!   context sees nothing and writes nothing.
//! * A deterministic test seeds every tenant table for both tenants and runs
//!   `UPDATE … SET customer_id = customer_id` and `DELETE` on each table as A,
//!   checking that B's rows are never touched.
//!
//! Tenant tables are discovered from the catalog (every relation in the
//! current schema with a `customer_id` column), so new tables are covered
//! without editing this file.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{NaiveDate, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use switchboard::crypto::Sealed;
use switchboard::db::{CustomerId, StorageError};
use switchboard::repo;
use switchboard::repo::calls::NewCall;
use switchboard::repo::credentials::PROVIDERS;
use switchboard::repo::turns::Turn;
use switchboard::repo::usage::Usage;
use uuid::Uuid;

use crate::helpers::TestDb;

/// Outcome of one check: a failure carries a message saying what leaked.
type Check<T = ()> = Result<T, TestCaseError>;

/// A prepared statement with owned arguments, run later in some transaction.
type Stmt = Query<'static, Postgres, PgArguments>;

/// Turns an error into a failed check that says what was being done.
trait Context<T> {
    fn ctx(self, what: &str) -> Check<T>;
}

impl<T, E: Debug> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Check<T> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))
    }
}

/// Fails with every message collected, or passes when there are none.
fn all_ok(what: &str, failures: Vec<String>) -> Check {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{what}:\n  - {}",
            failures.join("\n  - ")
        )))
    }
}

// ---------------------------------------------------------------------------
// Unique names: slugs and numbers are unique per database.
// ---------------------------------------------------------------------------

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A phone number no other tenant in this process holds (`+1` and 10 digits).
fn unique_number() -> String {
    format!("+1{}", 2_000_000_000 + NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A caller number distinct from the generated ones (`+13…`).
fn unique_caller() -> String {
    format!("+1{}", 3_000_000_000 + NEXT.fetch_add(1, Ordering::Relaxed))
}

fn unique_slug(tag: &str) -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("iso-{}-{}", tag.to_ascii_lowercase(), &id[..12])
}

// ---------------------------------------------------------------------------
// Generated cases.
// ---------------------------------------------------------------------------

const SPEAKERS: &[&str] = &["caller", "agent", "system", "tool", "dtmf"];

/// The job kind the isolation checks enqueue.
const JOB_KIND: &str = "isolation_check";

/// What one tenant writes. Every text carries the tenant's tag, and B's
/// usage deltas lie in a different range from A's, so content differs.
#[derive(Debug, Clone)]
struct TenantCase {
    tag: &'static str,
    display_name: String,
    fields: Value,
    calls_recorded: u32,
    /// A caller only this tenant has.
    own_caller: String,
    /// A call sid only this tenant has.
    own_sid: String,
    /// (speaker, text) per turn of the own call.
    turns: Vec<(String, String)>,
    usage: Vec<Usage>,
    secret: String,
    staff_name: String,
    key_name: String,
    key_hash: [u8; 32],
    audit_action: String,
    audit_target: String,
    number_label: String,
}

/// Two tenants' writes plus what they share.
#[derive(Debug, Clone)]
struct Case {
    /// The caller number both tenants know.
    caller: String,
    /// A staff email both tenants use.
    email: String,
    /// A call sid both tenants record.
    shared_sid: String,
    /// A credential provider both tenants configure.
    provider: &'static str,
    /// A provider only B configures.
    b_only_provider: &'static str,
    /// Usage month.
    month: NaiveDate,
    a: TenantCase,
    b: TenantCase,
}

fn e164() -> impl Strategy<Value = String> {
    "\\+1[2-9][0-9]{9}"
}

fn call_sid() -> impl Strategy<Value = String> {
    "CA[0-9a-f]{32}"
}

fn usage(offset: i32) -> impl Strategy<Value = Usage> {
    (
        0..500i32,
        0..50i32,
        0..100_000i64,
        0..1_000_000i64,
        0..1_000_000i64,
        0..100_000i64,
        0..100_000i64,
        0..100i32,
    )
        .prop_map(
            move |(calls, refused, secs, prompt, completion, tts, stt, sms)| Usage {
                calls: calls + offset,
                refused_calls: refused,
                call_seconds: secs,
                llm_prompt_tokens: prompt,
                llm_completion_tokens: completion,
                tts_characters: tts,
                stt_seconds: stt,
                sms_segments: sms,
            },
        )
}

fn tenant_case(tag: &'static str, usage_offset: i32) -> impl Strategy<Value = TenantCase> {
    let profile = (
        "[A-Z][a-z]{1,12}( [A-Z][a-z]{1,12})?",
        prop::collection::btree_map("[a-z][a-z_]{0,9}", "\\PC{0,24}", 1..5),
        1u32..4,
        e164(),
        call_sid(),
        prop::collection::vec((prop::sample::select(SPEAKERS), "\\PC{0,60}"), 1..6),
    );
    let account = (
        prop::collection::vec(usage(usage_offset), 1..4),
        "[A-Za-z0-9]{8,40}",
        "[A-Za-z][A-Za-z ]{0,20}",
        "[a-z][a-z0-9 -]{0,20}",
        any::<[u8; 32]>(),
        "[a-z]{1,10}\\.[a-z]{1,10}",
        "\\PC{0,30}",
        "[a-z ]{0,20}",
    );
    (profile, account).prop_map(
        move |(
            (display_name, fields, calls_recorded, own_caller, own_sid, turns),
            (usage, secret, staff_name, key_name, key_hash, action, target, label),
        )| TenantCase {
            tag,
            display_name: format!("{tag} {display_name}"),
            fields: Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(format!("{tag}:{v}"))))
                    .collect(),
            ),
            calls_recorded,
            own_caller,
            own_sid,
            turns: turns
                .into_iter()
                .map(|(speaker, text)| (speaker.to_string(), format!("{tag}: {text}")))
                .collect(),
            usage,
            secret: format!("sk-{tag}-{secret}"),
            staff_name: format!("{tag} {staff_name}"),
            key_name: format!("{tag} {key_name}"),
            key_hash,
            audit_action: format!("{}.{action}", tag.to_ascii_lowercase()),
            audit_target: format!("{tag}:{target}"),
            number_label: format!("{tag} {label}"),
        },
    )
}

fn distinct(items: [&String; 3]) -> bool {
    items.iter().collect::<BTreeSet<_>>().len() == items.len()
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        e164(),
        "[a-z][a-z0-9.]{0,15}@[a-z]{1,10}\\.(com|org|test)",
        call_sid(),
        0..PROVIDERS.len(),
        1..PROVIDERS.len(),
        2020i32..2031,
        1u32..13,
        tenant_case("A", 0),
        tenant_case("B", 1000),
    )
        .prop_filter_map(
            "callers and call sids must be distinct",
            |(caller, email, shared_sid, p, d, year, month, a, b)| {
                if !distinct([&caller, &a.own_caller, &b.own_caller])
                    || !distinct([&shared_sid, &a.own_sid, &b.own_sid])
                {
                    return None;
                }
                Some(Case {
                    caller,
                    email,
                    shared_sid,
                    provider: PROVIDERS[p],
                    b_only_provider: PROVIDERS[(p + d) % PROVIDERS.len()],
                    month: NaiveDate::from_ymd_opt(year, month, 1)?,
                    a,
                    b,
                })
            },
        )
}

// ---------------------------------------------------------------------------
// Writing a tenant through the repository functions.
// ---------------------------------------------------------------------------

/// What a tenant wrote, with the ids the database assigned.
#[derive(Debug, Clone)]
struct Tenant {
    data: TenantCase,
    id: CustomerId,
    slug: String,
    /// Initial number first, then the one assigned through `numbers::assign`.
    numbers: Vec<String>,
    staff_user_id: Uuid,
    key_id: Uuid,
    own_call: Uuid,
    shared_call: Uuid,
    /// Job keyed by the own call sid: left `running`, attempt 1, as if claimed.
    own_job: Uuid,
    /// Job keyed by the shared call sid: left `queued`.
    shared_job: Uuid,
    usage_sum: Usage,
    /// Providers with a credential, the shared one first.
    providers: Vec<&'static str>,
    /// The sealed secret stored for the shared provider.
    sealed: Sealed,
}

impl Tenant {
    fn tag(&self) -> &'static str {
        self.data.tag
    }

    fn secret_for(&self, provider: &str, case: &Case) -> String {
        secret_for(&self.data, provider, case)
    }

    fn turns(&self) -> Check<Vec<Turn>> {
        self.data
            .turns
            .iter()
            .enumerate()
            .map(|(seq, (speaker, text))| turn(seq, speaker, text, self.tag()))
            .collect()
    }
}

fn secret_for(data: &TenantCase, provider: &str, case: &Case) -> String {
    if provider == case.provider {
        data.secret.clone()
    } else {
        format!("{}-{provider}", data.secret)
    }
}

fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

fn turn(seq: usize, speaker: &str, text: &str, tag: &str) -> Check<Turn> {
    let seq = i32::try_from(seq).ctx("turn seq fits i32")?;
    Ok(Turn {
        seq,
        speaker: speaker.to_string(),
        text: text.to_string(),
        interrupted: seq % 2 == 1,
        start_ms: Some(i64::from(seq) * 1000),
        end_ms: Some(i64::from(seq) * 1000 + 900),
        timings: json!({ "tenant": tag, "stt_final_ms": seq }),
    })
}

fn add_usage(sum: &Usage, d: &Usage) -> Usage {
    Usage {
        calls: sum.calls + d.calls,
        refused_calls: sum.refused_calls + d.refused_calls,
        call_seconds: sum.call_seconds + d.call_seconds,
        llm_prompt_tokens: sum.llm_prompt_tokens + d.llm_prompt_tokens,
        llm_completion_tokens: sum.llm_completion_tokens + d.llm_completion_tokens,
        tts_characters: sum.tts_characters + d.tts_characters,
        stt_seconds: sum.stt_seconds + d.stt_seconds,
        sms_segments: sum.sms_segments + d.sms_segments,
    }
}

/// Creates a tenant and writes through every repository write function.
async fn write_tenant(tdb: &TestDb, case: &Case, data: &TenantCase) -> Check<Tenant> {
    let tag = data.tag;
    let slug = unique_slug(tag);
    let number = unique_number();
    let extra_number = unique_number();
    let id = tdb.tenant(&slug, &number).await;
    let keyring = tdb.platform.keyring();
    let mut tx = tdb.db().tenant(id).await.ctx("open tenant transaction")?;

    repo::numbers::assign(&mut tx, &extra_number, Some(&data.number_label), None)
        .await
        .ctx(&format!("numbers::assign as {tag}"))?;
    let staff = repo::staff::create(
        &mut tx,
        &case.email,
        &data.staff_name,
        "agent",
        "$argon2id$v=19$not-a-real-hash",
    )
    .await
    .ctx(&format!("staff::create as {tag}"))?;
    let key = repo::api_keys::create(
        &mut tx,
        &data.key_name,
        &format!("sb_{tag}"),
        &data.key_hash,
    )
    .await
    .ctx(&format!("api_keys::create as {tag}"))?;

    let mut providers = vec![case.provider];
    if tag == "B" {
        providers.push(case.b_only_provider);
    }
    let mut shared_sealed = None;
    for provider in &providers {
        let secret = secret_for(data, provider, case);
        let sealed = keyring
            .seal(id, provider, &SecretString::from(secret.clone()))
            .ctx("seal a credential")?;
        repo::credentials::upsert(
            &mut tx,
            provider,
            None,
            &json!({ "model": format!("{tag}-model") }),
            &sealed,
            &hint(&secret),
        )
        .await
        .ctx(&format!("credentials::upsert as {tag}"))?;
        if *provider == case.provider {
            shared_sealed = Some(sealed);
        }
    }
    let sealed = shared_sealed.ok_or_else(|| TestCaseError::fail("no shared credential"))?;

    repo::audit::record(
        &mut tx,
        &format!("staff:{}", case.email),
        &data.audit_action,
        Some(&data.audit_target),
        json!({ "tenant": tag }),
    )
    .await
    .ctx(&format!("audit::record as {tag}"))?;

    let mut usage_sum = Usage::default();
    for delta in &data.usage {
        repo::usage::add(&mut tx, case.month, delta)
            .await
            .ctx(&format!("usage::add as {tag}"))?;
        usage_sum = add_usage(&usage_sum, delta);
    }

    let now = Utc::now();
    for _ in 0..data.calls_recorded {
        repo::callers::record_call(&mut tx, &case.caller, now)
            .await
            .ctx(&format!("callers::record_call as {tag}"))?;
    }
    repo::callers::upsert(
        &mut tx,
        &case.caller,
        Some(&data.display_name),
        &data.fields,
    )
    .await
    .ctx(&format!("callers::upsert as {tag}"))?;
    repo::callers::upsert(
        &mut tx,
        &data.own_caller,
        Some(&data.display_name),
        &json!({}),
    )
    .await
    .ctx(&format!("callers::upsert (own caller) as {tag}"))?;

    let new_call = |sid| NewCall {
        call_sid: sid,
        user_id: Some(&case.caller),
        to_number: &number,
        direction: "inbound",
        status: "ringing",
        started_at: now,
    };
    let own = repo::calls::create(&mut tx, &new_call(&data.own_sid))
        .await
        .ctx(&format!("calls::create as {tag}"))?;
    let shared = repo::calls::create(&mut tx, &new_call(&case.shared_sid))
        .await
        .ctx(&format!("calls::create (shared sid) as {tag}"))?;

    let job_payload = json!({ "tenant": tag });
    let mut enqueued = Vec::new();
    for key in [&data.own_sid, &case.shared_sid] {
        let first = repo::jobs::enqueue(&mut tx, JOB_KIND, key, &job_payload, 3)
            .await
            .ctx(&format!("jobs::enqueue as {tag}"))?;
        let again = repo::jobs::enqueue(&mut tx, JOB_KIND, key, &json!({}), 9)
            .await
            .ctx(&format!("jobs::enqueue (again) as {tag}"))?;
        prop_assert!(
            first.created && !again.created && again.job_id == first.job_id,
            "jobs::enqueue as {tag} is not idempotent per key: {first:?}, then {again:?}"
        );
        enqueued.push(first.job_id);
    }
    // The own job as a worker's claim leaves it (the claim itself is the
    // cross-tenant directory function, tested in tests/api/jobs.rs).
    sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = 1, \
             locked_until = now() + interval '1 hour' WHERE job_id = $1",
    )
    .bind(enqueued[0])
    .execute(tx.conn())
    .await
    .ctx("claim own job")?;

    let tenant = Tenant {
        data: data.clone(),
        id,
        slug,
        numbers: vec![number.clone(), extra_number],
        staff_user_id: staff.user_id,
        key_id: key.key_id,
        own_call: own.call_id,
        shared_call: shared.call_id,
        own_job: enqueued[0],
        shared_job: enqueued[1],
        usage_sum,
        providers,
        sealed,
    };
    for t in tenant.turns()? {
        repo::turns::append(&mut tx, own.call_id, &t)
            .await
            .ctx(&format!("turns::append as {tag}"))?;
    }
    let shared_turn = turn(0, "agent", &format!("{tag}: shared call"), tag)?;
    repo::turns::append(&mut tx, shared.call_id, &shared_turn)
        .await
        .ctx(&format!("turns::append (shared call) as {tag}"))?;
    tx.commit().await.ctx("commit tenant writes")?;
    Ok(tenant)
}

// ---------------------------------------------------------------------------
// 1. No read crosses tenants.
// ---------------------------------------------------------------------------

/// Every repository read as `me` returns exactly `me`'s data, none of `other`'s.
async fn check_reads(tdb: &TestDb, case: &Case, me: &Tenant, other: &Tenant) -> Check {
    let (who, them) = (me.tag(), other.tag());
    let mut tx = tdb
        .db()
        .tenant(me.id)
        .await
        .ctx("open tenant transaction")?;

    let customer = repo::customers::get(&mut tx).await.ctx("customers::get")?;
    prop_assert!(
        customer.customer_id == me.id && customer.slug == me.slug,
        "customers::get as {who} returned tenant `{}` ({}), not {who}'s `{}`",
        customer.slug,
        customer.customer_id,
        me.slug
    );

    let numbers: BTreeSet<String> = repo::numbers::list(&mut tx)
        .await
        .ctx("numbers::list")?
        .into_iter()
        .map(|n| n.e164)
        .collect();
    let leaked: Vec<_> = other
        .numbers
        .iter()
        .filter(|n| numbers.contains(*n))
        .collect();
    prop_assert!(
        leaked.is_empty(),
        "numbers::list as {who} leaked {them}'s numbers {leaked:?}"
    );
    prop_assert_eq!(
        &numbers,
        &me.numbers.iter().cloned().collect::<BTreeSet<_>>(),
        "numbers::list as {} is not exactly {}'s numbers",
        who,
        who
    );

    let staff = repo::staff::list(&mut tx).await.ctx("staff::list")?;
    prop_assert!(
        !staff.iter().any(|s| s.user_id == other.staff_user_id),
        "staff::list as {who} leaked {them}'s staff account with the shared email {}",
        case.email
    );
    prop_assert!(
        staff.len() == 1
            && staff[0].user_id == me.staff_user_id
            && staff[0].display_name == me.data.staff_name,
        "staff::list as {who} is not exactly {who}'s one account: {staff:?}"
    );

    let keys = repo::api_keys::list(&mut tx).await.ctx("api_keys::list")?;
    prop_assert!(
        !keys.iter().any(|k| k.key_id == other.key_id),
        "api_keys::list as {who} leaked {them}'s key {}",
        other.key_id
    );
    prop_assert!(
        keys.len() == 1 && keys[0].key_id == me.key_id && keys[0].name == me.data.key_name,
        "api_keys::list as {who} is not exactly {who}'s key: {keys:?}"
    );

    let creds = repo::credentials::list(&mut tx)
        .await
        .ctx("credentials::list")?;
    let listed: BTreeSet<&str> = creds.iter().map(|c| c.provider.as_str()).collect();
    let mine: BTreeSet<&str> = me.providers.iter().copied().collect();
    prop_assert!(
        listed == mine,
        "credentials::list as {who} shows providers {listed:?}, {who} configured {mine:?} \
         ({them} configured {:?})",
        other.providers
    );
    for c in &creds {
        let expected = hint(&me.secret_for(&c.provider, case));
        prop_assert!(
            c.secret_hint == expected && c.settings == json!({ "model": format!("{who}-model") }),
            "credentials::list as {who} returned {them}'s {} credential (hint {}, settings {})",
            c.provider,
            c.secret_hint,
            c.settings
        );
    }
    let stored = repo::credentials::get(&mut tx, case.provider)
        .await
        .ctx("credentials::get")?
        .ok_or_else(|| {
            TestCaseError::fail(format!("credentials::get as {who} lost {who}'s credential"))
        })?;
    let opened = tdb
        .platform
        .keyring()
        .open(me.id, case.provider, &stored.sealed)
        .map_err(|e| {
            TestCaseError::fail(format!(
                "credentials::get as {who} returned a secret that does not open for {who} \
                 (sealed for {them}?): {e}"
            ))
        })?;
    prop_assert!(
        opened.expose_secret() == me.secret_for(case.provider, case),
        "credentials::get as {who} decrypts to a secret that is not {who}'s"
    );
    for provider in other.providers.iter().filter(|p| !me.providers.contains(p)) {
        let got = repo::credentials::get(&mut tx, provider)
            .await
            .ctx("credentials::get")?;
        prop_assert!(
            got.is_none(),
            "credentials::get({provider}) as {who} returned {them}'s credential"
        );
    }

    let audit = repo::audit::list(&mut tx, 1000).await.ctx("audit::list")?;
    for entry in &audit {
        let target = entry.target.as_deref();
        prop_assert!(
            entry.action != other.data.audit_action
                && target != Some(other.data.audit_target.as_str())
                && target != Some(other.slug.as_str())
                && entry.details != json!({ "tenant": them }),
            "audit::list as {who} leaked {them}'s entry {entry:?}"
        );
    }
    prop_assert!(
        audit.iter().any(|e| e.action == me.data.audit_action
            && e.target.as_deref() == Some(me.data.audit_target.as_str())),
        "audit::list as {who} lost {who}'s own entry"
    );

    let used = repo::usage::get(&mut tx, case.month)
        .await
        .ctx("usage::get")?;
    prop_assert!(
        used == me.usage_sum,
        "usage::get as {who} = {used:?}, but {who}'s sum is {:?} ({them}'s is {:?})",
        me.usage_sum,
        other.usage_sum
    );

    let profile = repo::callers::get(&mut tx, &case.caller)
        .await
        .ctx("callers::get")?
        .ok_or_else(|| {
            TestCaseError::fail(format!("callers::get as {who} lost the shared caller"))
        })?;
    prop_assert!(
        profile.display_name.as_deref() == Some(me.data.display_name.as_str())
            && profile.fields == me.data.fields
            && u32::try_from(profile.call_count) == Ok(me.data.calls_recorded),
        "callers::get({}) as {who} is not {who}'s profile: got name {:?}, fields {}, {} calls; \
         {who} wrote {:?}, {}, {} calls; {them} wrote {:?}, {}, {} calls",
        case.caller,
        profile.display_name,
        profile.fields,
        profile.call_count,
        me.data.display_name,
        me.data.fields,
        me.data.calls_recorded,
        other.data.display_name,
        other.data.fields,
        other.data.calls_recorded
    );
    let theirs = repo::callers::get(&mut tx, &other.data.own_caller)
        .await
        .ctx("callers::get")?;
    prop_assert!(
        theirs.is_none(),
        "callers::get as {who} returned {them}'s caller {}: {theirs:?}",
        other.data.own_caller
    );
    let callers: BTreeSet<String> = repo::callers::list(&mut tx, 1000)
        .await
        .ctx("callers::list")?
        .into_iter()
        .map(|p| p.user_id)
        .collect();
    prop_assert!(
        !callers.contains(&other.data.own_caller),
        "callers::list as {who} leaked {them}'s caller {}",
        other.data.own_caller
    );
    prop_assert_eq!(
        &callers,
        &[case.caller.clone(), me.data.own_caller.clone()]
            .into_iter()
            .collect::<BTreeSet<_>>(),
        "callers::list as {} is not exactly {}'s callers",
        who,
        who
    );

    let my_calls: BTreeSet<Uuid> = [me.own_call, me.shared_call].into_iter().collect();
    for filter in [None, Some(case.caller.as_str())] {
        let calls = repo::calls::list(&mut tx, filter, 1000)
            .await
            .ctx("calls::list")?;
        let leaked: Vec<_> = calls
            .iter()
            .filter(|c| !my_calls.contains(&c.call_id))
            .map(|c| (&c.call_sid, c.call_id))
            .collect();
        prop_assert!(
            leaked.is_empty(),
            "calls::list({filter:?}) as {who} leaked calls of {them}: {leaked:?}"
        );
        prop_assert!(
            calls.len() == 2,
            "calls::list({filter:?}) as {who} returned {} calls, {who} has 2",
            calls.len()
        );
    }
    let foreign = repo::calls::get_by_sid(&mut tx, &other.data.own_sid)
        .await
        .ctx("calls::get_by_sid")?;
    prop_assert!(
        foreign.is_none(),
        "calls::get_by_sid({}) as {who} returned {them}'s call {:?}",
        other.data.own_sid,
        foreign.map(|c| c.call_id)
    );
    for (sid, expected) in [
        (&me.data.own_sid, me.own_call),
        (&case.shared_sid, me.shared_call),
    ] {
        let got = repo::calls::get_by_sid(&mut tx, sid)
            .await
            .ctx("calls::get_by_sid")?
            .map(|c| c.call_id);
        prop_assert!(
            got == Some(expected),
            "calls::get_by_sid({sid}) as {who} returned {got:?}, not {who}'s call {expected} \
             ({them}'s calls are {} and {})",
            other.own_call,
            other.shared_call
        );
    }

    for call in [other.own_call, other.shared_call] {
        let turns = repo::turns::list(&mut tx, call).await.ctx("turns::list")?;
        prop_assert!(
            turns.is_empty(),
            "turns::list({call}) as {who} leaked {them}'s transcript: {turns:?}"
        );
        let at = repo::turns::last_written_at(&mut tx, call)
            .await
            .ctx("turns::last_written_at")?;
        prop_assert!(
            at.is_none(),
            "turns::last_written_at({call}) as {who} saw {them}'s transcript (at {at:?})"
        );
    }
    let transcript = repo::turns::list(&mut tx, me.own_call)
        .await
        .ctx("turns::list")?;
    prop_assert_eq!(
        transcript,
        me.turns()?,
        "turns::list as {} is not exactly {}'s transcript",
        who,
        who
    );
    let at = repo::turns::last_written_at(&mut tx, me.own_call)
        .await
        .ctx("turns::last_written_at")?;
    prop_assert!(
        at.is_some(),
        "turns::last_written_at as {who} lost {who}'s turns"
    );

    let open: BTreeSet<Uuid> = repo::calls::list_open(&mut tx)
        .await
        .ctx("calls::list_open")?
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    prop_assert!(
        open == my_calls,
        "calls::list_open as {who} returned {open:?}, {who}'s open calls are {my_calls:?} \
         ({them}'s are {} and {})",
        other.own_call,
        other.shared_call
    );

    for job in [other.own_job, other.shared_job] {
        let got = repo::jobs::get(&mut tx, job).await.ctx("jobs::get")?;
        prop_assert!(
            got.is_none(),
            "jobs::get({job}) as {who} returned {them}'s job: {got:?}"
        );
    }
    let theirs = repo::jobs::find(&mut tx, JOB_KIND, &other.data.own_sid)
        .await
        .ctx("jobs::find")?;
    prop_assert!(
        theirs.is_none(),
        "jobs::find({}) as {who} returned {them}'s job: {theirs:?}",
        other.data.own_sid
    );
    for (key, expected) in [
        (&me.data.own_sid, me.own_job),
        (&case.shared_sid, me.shared_job),
    ] {
        let found = repo::jobs::find(&mut tx, JOB_KIND, key)
            .await
            .ctx("jobs::find")?;
        let by_id = repo::jobs::get(&mut tx, expected).await.ctx("jobs::get")?;
        let mine = |j: &Option<repo::jobs::Job>| {
            j.as_ref()
                .is_some_and(|j| j.job_id == expected && j.payload == json!({ "tenant": who }))
        };
        prop_assert!(
            mine(&found) && mine(&by_id),
            "jobs::find({key}) / jobs::get as {who} did not return {who}'s job {expected}: \
             {found:?} / {by_id:?} ({them}'s jobs are {} and {})",
            other.own_job,
            other.shared_job
        );
    }

    tx.rollback().await.ctx("rollback")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Writes naming the other tenant are rejected or affect nothing.
// ---------------------------------------------------------------------------

/// Inserts of one valid row owned by `owner` into every tenant table that has
/// no repository function for it, plus the ones that do. Run in `owner`'s
/// transaction they succeed; in any other they must be rejected.
fn rows_owned_by(owner: &Tenant, case: &Case) -> Vec<(&'static str, Stmt)> {
    let id = owner.id;
    let unused_provider = PROVIDERS
        .iter()
        .copied()
        .find(|p| !owner.providers.contains(p))
        .unwrap_or("deepgram");
    vec![
        (
            "caller_profiles",
            sqlx::query(
                "INSERT INTO caller_profiles (customer_id, user_id, display_name) \
                 VALUES ($1, $2, 'forged')",
            )
            .bind(id)
            .bind(unique_caller()),
        ),
        (
            "calls",
            sqlx::query(
                "INSERT INTO calls (customer_id, call_id, call_sid, user_id, to_number) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(format!("CAforged{}", Uuid::new_v4().simple()))
            .bind(case.caller.clone())
            .bind(owner.numbers[0].clone()),
        ),
        (
            "call_turns",
            sqlx::query(
                "INSERT INTO call_turns (customer_id, call_id, seq, speaker, text) \
                 VALUES ($1, $2, 100000, 'agent', 'forged')",
            )
            .bind(id)
            .bind(owner.own_call),
        ),
        (
            "call_summaries",
            sqlx::query(
                "INSERT INTO call_summaries (customer_id, call_id, user_id, summary) \
                 VALUES ($1, $2, $3, 'forged')",
            )
            .bind(id)
            .bind(owner.own_call)
            .bind(case.caller.clone()),
        ),
        (
            "caller_facts",
            sqlx::query(
                "INSERT INTO caller_facts (customer_id, fact_id, user_id, key, value, source_call_id) \
                 VALUES ($1, $2, $3, 'forged', '\"x\"', $4)",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(case.caller.clone())
            .bind(owner.own_call),
        ),
        (
            "caller_memories",
            sqlx::query(
                "INSERT INTO caller_memories (customer_id, memory_id, user_id, content) \
                 VALUES ($1, $2, $3, 'forged')",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(case.caller.clone()),
        ),
        (
            "call_personality",
            sqlx::query(
                "INSERT INTO call_personality (customer_id, call_id, user_id, formality, \
                     verbosity, sentiment, patience, decisiveness) \
                 VALUES ($1, $2, $3, 0.5, 0.5, 0, 0.5, 0.5)",
            )
            .bind(id)
            .bind(owner.own_call)
            .bind(case.caller.clone()),
        ),
        (
            "caller_personality",
            sqlx::query("INSERT INTO caller_personality (customer_id, user_id) VALUES ($1, $2)")
                .bind(id)
                .bind(case.caller.clone()),
        ),
        (
            "usage_monthly",
            sqlx::query(
                "INSERT INTO usage_monthly (customer_id, month, calls) VALUES ($1, '2000-01-01', 1)",
            )
            .bind(id),
        ),
        (
            "usage_monthly (upsert onto the existing month)",
            sqlx::query(
                "INSERT INTO usage_monthly AS u (customer_id, month, calls) VALUES ($1, $2, 1) \
                 ON CONFLICT (customer_id, month) DO UPDATE SET calls = u.calls + 1000000",
            )
            .bind(id)
            .bind(case.month),
        ),
        (
            "audit_log",
            sqlx::query(
                "INSERT INTO audit_log (customer_id, actor, action) VALUES ($1, 'forger', 'forged')",
            )
            .bind(id),
        ),
        (
            "provider_credentials",
            sqlx::query(
                "INSERT INTO provider_credentials (customer_id, provider, key_version, nonce, \
                     ciphertext, secret_hint) VALUES ($1, $2, 1, $3, $4, 'rged')",
            )
            .bind(id)
            .bind(unused_provider)
            .bind(vec![7u8; 24])
            .bind(vec![1u8; 32]),
        ),
        (
            "staff_users",
            sqlx::query(
                "INSERT INTO staff_users (customer_id, user_id, email, display_name, role, \
                     password_hash) VALUES ($1, $2, $3, 'Forged', 'admin', 'x')",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(format!("forged-{}@example.test", Uuid::new_v4().simple())),
        ),
        (
            "tenant_api_keys",
            sqlx::query(
                "INSERT INTO tenant_api_keys (customer_id, key_id, name, prefix, key_hash) \
                 VALUES ($1, $2, 'forged', 'sb_forged', $3)",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4().as_bytes().repeat(2)),
        ),
        (
            "phone_numbers",
            sqlx::query("INSERT INTO phone_numbers (customer_id, e164) VALUES ($1, $2)")
                .bind(id)
                .bind(unique_number()),
        ),
        (
            "jobs",
            sqlx::query(
                "INSERT INTO jobs (customer_id, job_id, kind, idempotency_key) \
                 VALUES ($1, $2, 'forged', $3)",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4().to_string()),
        ),
        (
            "sms_consent",
            sqlx::query(
                "INSERT INTO sms_consent (customer_id, user_id, status, source) \
                 VALUES ($1, $2, 'opted_in', 'forged')",
            )
            .bind(id)
            .bind(case.caller.clone()),
        ),
        (
            "sms_messages",
            sqlx::query(
                "INSERT INTO sms_messages (customer_id, sms_id, direction, user_id, from_number, \
                     to_number, body, status, call_id) \
                 VALUES ($1, $2, 'outbound', $3, $4, $3, 'forged', 'queued', $5)",
            )
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(case.caller.clone())
            .bind(owner.numbers[0].clone())
            .bind(owner.own_call),
        ),
    ]
}

/// Statements run as `attacker` that move `attacker`'s rows to `victim`.
fn moves_to(attacker: &Tenant, victim: &Tenant) -> Vec<(&'static str, Stmt)> {
    vec![
        (
            "caller_profiles (move own row)",
            sqlx::query("UPDATE caller_profiles SET customer_id = $1 WHERE user_id = $2")
                .bind(victim.id)
                .bind(attacker.data.own_caller.clone()),
        ),
        (
            "calls (move own row)",
            sqlx::query("UPDATE calls SET customer_id = $1 WHERE call_sid = $2")
                .bind(victim.id)
                .bind(attacker.data.own_sid.clone()),
        ),
        (
            "audit_log (move own rows)",
            sqlx::query("UPDATE audit_log SET customer_id = $1").bind(victim.id),
        ),
        (
            "customers (a brand-new tenant id)",
            sqlx::query(
                "INSERT INTO customers (customer_id, slug, name, agent_name, greeting, \
                     template_slug, template_version) \
                 VALUES ($1, $2, 'Forged', 'Ava', 'Hello', 'insurance', 1)",
            )
            .bind(Uuid::new_v4())
            .bind(unique_slug("forged")),
        ),
    ]
}

/// Raw SQL in A's transaction naming B (or moving A's rows to B) fails with
/// `TenantViolation`; the same inserts in B's own transaction succeed.
async fn check_forged_writes(tdb: &TestDb, case: &Case, a: &Tenant, b: &Tenant) -> Check {
    let (who, them) = (a.tag(), b.tag());
    let mut failures = Vec::new();

    // Control: the statements are valid for their rightful owner.
    let mut own = tdb.db().tenant(b.id).await.ctx("open tenant transaction")?;
    for (table, stmt) in rows_owned_by(b, case) {
        if let Err(e) = stmt.execute(own.conn()).await {
            failures.push(format!(
                "control: inserting {them}'s row into {table} as {them} failed: {e}"
            ));
            break;
        }
    }
    own.rollback().await.ctx("rollback")?;

    let forged = rows_owned_by(b, case).into_iter().chain(moves_to(a, b));
    for (table, stmt) in forged {
        let mut tx = tdb.db().tenant(a.id).await.ctx("open tenant transaction")?;
        let result = stmt.execute(tx.conn()).await.map_err(StorageError::from);
        drop(tx);
        match result {
            Err(StorageError::TenantViolation) => {}
            Ok(done) => failures.push(format!(
                "writing {table} naming {them} inside {who}'s transaction succeeded \
                 ({} rows) instead of failing with TenantViolation",
                done.rows_affected()
            )),
            Err(other) => failures.push(format!(
                "writing {table} naming {them} inside {who}'s transaction failed with \
                 {other:?}, not TenantViolation"
            )),
        }
    }
    all_ok(
        &format!("writes naming {them} from {who}'s transaction were not rejected"),
        failures,
    )
}

/// Repository writes as A aimed at B's rows affect nothing of B's.
async fn check_repo_writes_at_other(tdb: &TestDb, case: &Case, a: &Tenant, b: &Tenant) -> Check {
    let (who, them) = (a.tag(), b.tag());
    let db = tdb.db();
    let keyring = tdb.platform.keyring();
    let now = Utc::now();

    let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
    let hijacked = repo::calls::update_status(
        &mut tx,
        &b.data.own_sid,
        "completed",
        Some(now),
        Some(42),
        Some("hijacked"),
    )
    .await
    .ctx("calls::update_status")?;
    prop_assert!(
        hijacked.is_none(),
        "calls::update_status({}) as {who} updated {them}'s call {:?}",
        b.data.own_sid,
        hijacked.map(|c| c.call_id)
    );
    let updated = repo::calls::update_status(
        &mut tx,
        &case.shared_sid,
        "completed",
        Some(now),
        Some(42),
        Some("done"),
    )
    .await
    .ctx("calls::update_status")?
    .map(|c| c.call_id);
    prop_assert!(
        updated == Some(a.shared_call),
        "calls::update_status(shared sid) as {who} updated {updated:?}, not {who}'s call {}",
        a.shared_call
    );

    let streamed = repo::calls::record_stream(&mut tx, &b.data.own_sid, "MZhijacked")
        .await
        .ctx("calls::record_stream")?;
    prop_assert!(
        !streamed,
        "calls::record_stream as {who} reached {them}'s call"
    );
    let ended = repo::calls::record_end_reason(&mut tx, &b.data.own_sid, "hijacked")
        .await
        .ctx("calls::record_end_reason")?;
    prop_assert!(
        !ended,
        "calls::record_end_reason as {who} reached {them}'s call"
    );

    let closed = repo::calls::close_interrupted(&mut tx, &b.data.own_sid)
        .await
        .ctx("calls::close_interrupted")?;
    prop_assert!(
        closed.is_none(),
        "calls::close_interrupted({}) as {who} closed {them}'s call {:?}",
        b.data.own_sid,
        closed.map(|c| c.call_id)
    );
    let closed = repo::calls::close_interrupted(&mut tx, &a.data.own_sid)
        .await
        .ctx("calls::close_interrupted")?
        .map(|c| c.call_id);
    prop_assert!(
        closed == Some(a.own_call),
        "calls::close_interrupted(own sid) as {who} closed {closed:?}, not {who}'s call"
    );

    // B's own job is running attempt 1 exactly like A's: only RLS stops these.
    let done = repo::jobs::mark_done(&mut tx, b.own_job, 1)
        .await
        .ctx("jobs::mark_done")?;
    prop_assert!(!done, "jobs::mark_done as {who} settled {them}'s job");
    let retried = repo::jobs::retry_later(
        &mut tx,
        b.own_job,
        1,
        std::time::Duration::from_secs(5),
        "hijacked",
    )
    .await
    .ctx("jobs::retry_later")?;
    prop_assert!(
        !retried,
        "jobs::retry_later as {who} rescheduled {them}'s job"
    );
    let buried = repo::jobs::mark_dead(&mut tx, b.own_job, 1, "hijacked")
        .await
        .ctx("jobs::mark_dead")?;
    prop_assert!(!buried, "jobs::mark_dead as {who} killed {them}'s job");
    let done = repo::jobs::mark_done(&mut tx, a.own_job, 1)
        .await
        .ctx("jobs::mark_done")?;
    prop_assert!(
        done,
        "jobs::mark_done as {who} missed {who}'s own running job"
    );
    let stolen_key = repo::jobs::enqueue(&mut tx, JOB_KIND, &b.data.own_sid, &json!({}), 1)
        .await
        .ctx("jobs::enqueue")?;
    prop_assert!(
        stolen_key.created && stolen_key.job_id != b.own_job,
        "jobs::enqueue as {who} with {them}'s key {} gave {stolen_key:?}, \
         not a new job of {who}'s own",
        b.data.own_sid
    );

    let revoked = repo::api_keys::revoke(&mut tx, b.key_id)
        .await
        .ctx("api_keys::revoke")?;
    prop_assert!(!revoked, "api_keys::revoke as {who} revoked {them}'s key");
    repo::api_keys::touch(&mut tx, b.key_id)
        .await
        .ctx("api_keys::touch")?;
    repo::api_keys::touch(&mut tx, a.key_id)
        .await
        .ctx("api_keys::touch")?;

    for number in &b.numbers {
        let released = repo::numbers::release(&mut tx, number)
            .await
            .ctx("numbers::release")?;
        prop_assert!(
            !released,
            "numbers::release({number}) as {who} released {them}'s number"
        );
    }

    let deleted = repo::callers::delete(&mut tx, &b.data.own_caller)
        .await
        .ctx("callers::delete")?;
    prop_assert!(
        !deleted,
        "callers::delete({}) as {who} deleted {them}'s caller",
        b.data.own_caller
    );
    let deleted = repo::callers::delete(&mut tx, &case.caller)
        .await
        .ctx("callers::delete")?;
    prop_assert!(
        deleted,
        "callers::delete(shared) as {who} missed {who}'s own profile"
    );

    let rotated = format!("{}-rotated", a.data.secret);
    let resealed_for_a = keyring
        .seal(a.id, case.provider, &SecretString::from(rotated.clone()))
        .ctx("seal")?;
    let touched = repo::credentials::reseal(&mut tx, case.b_only_provider, &resealed_for_a)
        .await
        .ctx("credentials::reseal")?;
    prop_assert!(
        !touched,
        "credentials::reseal({}) as {who} rewrote {them}'s credential",
        case.b_only_provider
    );
    let touched = repo::credentials::reseal(&mut tx, case.provider, &resealed_for_a)
        .await
        .ctx("credentials::reseal")?;
    prop_assert!(
        touched,
        "credentials::reseal as {who} missed {who}'s own credential"
    );

    let previous = repo::customers::set_status(&mut tx, "suspended")
        .await
        .ctx("customers::set_status")?;
    prop_assert_eq!(previous.as_str(), "active");

    repo::audit::record(&mut tx, "attacker", "a.after", None, json!({}))
        .await
        .ctx("audit::record")?;
    repo::usage::add(&mut tx, case.month, &b.usage_sum)
        .await
        .ctx("usage::add")?;
    tx.commit().await.ctx("commit")?;

    // Writes that fail outright; each gets its own transaction.
    let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
    let forged_turn = turn(50_000, "agent", "forged into the other tenant", who)?;
    let appended = repo::turns::append(&mut tx, b.own_call, &forged_turn).await;
    prop_assert!(
        appended.is_err(),
        "turns::append as {who} onto {them}'s call id {} was accepted",
        b.own_call
    );
    drop(tx);
    let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
    let stolen = repo::numbers::assign(&mut tx, &b.numbers[1], None, None).await;
    prop_assert!(
        matches!(stolen, Err(StorageError::Conflict(_))),
        "numbers::assign as {who} of {them}'s number {} gave {stolen:?}, not a conflict",
        b.numbers[1]
    );
    drop(tx);

    // The writes took effect for A (so the checks on B are not vacuous)...
    let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
    let status = repo::calls::get_by_sid(&mut tx, &case.shared_sid)
        .await
        .ctx("calls::get_by_sid")?
        .map(|c| c.status);
    prop_assert_eq!(status.as_deref(), Some("completed"));
    let own = repo::calls::get_by_sid(&mut tx, &a.data.own_sid)
        .await
        .ctx("calls::get_by_sid")?
        .map(|c| (c.status, c.end_reason));
    prop_assert_eq!(
        own,
        Some(("interrupted".to_string(), Some("interrupted".to_string())))
    );
    let job = repo::jobs::get(&mut tx, a.own_job)
        .await
        .ctx("jobs::get")?
        .map(|j| j.status);
    prop_assert_eq!(job.as_deref(), Some("done"));
    prop_assert!(repo::callers::get(&mut tx, &case.caller)
        .await
        .ctx("callers::get")?
        .is_none());
    let stored = repo::credentials::get(&mut tx, case.provider)
        .await
        .ctx("credentials::get")?
        .ok_or_else(|| TestCaseError::fail("A's credential vanished"))?;
    let opened = keyring
        .open(a.id, case.provider, &stored.sealed)
        .ctx("open A's resealed credential")?;
    prop_assert_eq!(opened.expose_secret(), rotated.as_str());
    let a_used: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM tenant_api_keys WHERE key_id = $1")
            .bind(a.key_id)
            .fetch_one(tx.conn())
            .await
            .ctx("read A's key")?;
    prop_assert!(
        a_used.is_some(),
        "api_keys::touch as {who} did not touch {who}'s own key"
    );
    prop_assert_eq!(
        repo::customers::get(&mut tx)
            .await
            .ctx("customers::get")?
            .status,
        "suspended"
    );
    tx.rollback().await.ctx("rollback")?;

    // ...and B, seen from B's own transaction, is exactly as written.
    check_untouched(tdb, case, b, a).await
}

/// `me`'s rows are as `write_tenant` left them, after `other` attacked them.
async fn check_untouched(tdb: &TestDb, case: &Case, me: &Tenant, other: &Tenant) -> Check {
    let (who, them) = (me.tag(), other.tag());
    check_reads(tdb, case, me, other).await?;
    let mut tx = tdb
        .db()
        .tenant(me.id)
        .await
        .ctx("open tenant transaction")?;
    for sid in [&me.data.own_sid, &case.shared_sid] {
        let call = repo::calls::get_by_sid(&mut tx, sid)
            .await
            .ctx("calls::get_by_sid")?
            .ok_or_else(|| TestCaseError::fail(format!("{who}'s call {sid} vanished")))?;
        prop_assert!(
            call.status == "ringing"
                && call.ended_at.is_none()
                && call.end_reason.is_none()
                && call.stream_sid.is_none(),
            "{them} changed {who}'s call {sid}: status {}, ended {:?}, reason {:?}, stream {:?}",
            call.status,
            call.ended_at,
            call.end_reason,
            call.stream_sid
        );
    }
    let key: (Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT revoked_at, last_used_at FROM tenant_api_keys WHERE key_id = $1")
            .bind(me.key_id)
            .fetch_one(tx.conn())
            .await
            .ctx("read key")?;
    prop_assert!(
        key == (None, None),
        "{them} revoked or touched {who}'s API key: revoked_at, last_used_at = {key:?}"
    );
    let stored = repo::credentials::get(&mut tx, case.provider)
        .await
        .ctx("credentials::get")?
        .ok_or_else(|| TestCaseError::fail(format!("{who}'s credential vanished")))?;
    prop_assert!(
        stored.sealed == me.sealed,
        "credentials::reseal as {them} rewrote {who}'s sealed {} secret",
        case.provider
    );
    let status = repo::customers::get(&mut tx)
        .await
        .ctx("customers::get")?
        .status;
    prop_assert_eq!(
        status.as_str(),
        "active",
        "customers::set_status as {} changed {}'s status",
        them,
        who
    );
    let turns = repo::turns::list(&mut tx, me.own_call)
        .await
        .ctx("turns::list")?;
    prop_assert_eq!(
        turns,
        me.turns()?,
        "{} appended to {}'s transcript",
        them,
        who
    );
    for (job, status, attempts) in [(me.own_job, "running", 1), (me.shared_job, "queued", 0)] {
        let stored = repo::jobs::get(&mut tx, job)
            .await
            .ctx("jobs::get")?
            .ok_or_else(|| TestCaseError::fail(format!("{who}'s job {job} vanished")))?;
        prop_assert!(
            stored.status == status
                && stored.attempts == attempts
                && stored.last_error.is_none()
                && stored.payload == json!({ "tenant": who }),
            "{them} changed {who}'s job {job}: {stored:?}"
        );
    }
    let owner = repo::jobs::find(&mut tx, JOB_KIND, &me.data.own_sid)
        .await
        .ctx("jobs::find")?
        .map(|j| j.job_id);
    prop_assert!(
        owner == Some(me.own_job),
        "{them}'s enqueue with {who}'s key took over {who}'s job: {owner:?}"
    );
    tx.rollback().await.ctx("rollback")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Missing tenant context fails closed.
// ---------------------------------------------------------------------------

/// Tables that the repository functions fill for every tenant.
const REPO_TABLES: &[&str] = &[
    "customers",
    "phone_numbers",
    "staff_users",
    "tenant_api_keys",
    "provider_credentials",
    "audit_log",
    "usage_monthly",
    "caller_profiles",
    "calls",
    "call_turns",
    "jobs",
];

/// Every relation in the current schema with a `customer_id` column, quoted,
/// and whether it is a table (as opposed to a view the app role may read).
async fn tenant_relations(conn: &mut sqlx::PgConnection) -> Check<Vec<(String, String, bool)>> {
    let rows = sqlx::query(
        "SELECT c.relname::text, quote_ident(c.relname)::text, c.relkind IN ('r', 'p')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'customer_id'
                            AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = current_schema()
           AND (c.relkind IN ('r', 'p')
                OR (c.relkind IN ('v', 'm', 'f') AND has_table_privilege(c.oid, 'SELECT')))
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .ctx("discover tenant tables")?;
    let relations: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let missing: Vec<_> = REPO_TABLES
        .iter()
        .filter(|t| !relations.iter().any(|(name, _, _)| name == *t))
        .collect();
    prop_assert!(
        missing.is_empty(),
        "catalog discovery found no `customer_id` column in {missing:?}; is the schema right?"
    );
    Ok(relations)
}

async fn count(conn: &mut sqlx::PgConnection, table: &str) -> Check<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .ctx(&format!("count {table}"))
}

/// A transaction without tenant context reads nothing from any tenant table
/// and cannot write a row naming a tenant.
async fn check_no_context(tdb: &TestDb, case: &Case, a: &Tenant, b: &Tenant) -> Check {
    let db = tdb.db();
    let mut failures = Vec::new();

    let mut platform = db.platform().await.ctx("open platform transaction")?;
    let no_context: bool = sqlx::query_scalar("SELECT app_customer_id() IS NULL")
        .fetch_one(&mut *platform)
        .await
        .ctx("read app_customer_id()")?;
    prop_assert!(
        no_context,
        "a platform transaction inherited a tenant context from a pooled connection"
    );
    let relations = tenant_relations(&mut platform).await?;
    for (name, quoted, _) in &relations {
        let n = count(&mut platform, quoted).await?;
        if n != 0 {
            failures.push(format!(
                "SELECT count(*) FROM {name} without tenant context saw {n} tenant rows"
            ));
        }
    }
    platform.rollback().await.ctx("rollback")?;

    // The rows are there: each tenant sees its own.
    for tenant in [a, b] {
        let mut tx = db.tenant(tenant.id).await.ctx("open tenant transaction")?;
        for table in REPO_TABLES {
            let n = count(tx.conn(), table).await?;
            if n == 0 {
                failures.push(format!(
                    "{} has no rows in {table}, so the no-context check proves nothing",
                    tenant.tag()
                ));
            }
        }
        tx.rollback().await.ctx("rollback")?;
    }

    for owner in [a, b] {
        for (table, stmt) in rows_owned_by(owner, case) {
            let mut platform = db.platform().await.ctx("open platform transaction")?;
            let result = stmt
                .execute(&mut *platform)
                .await
                .map_err(StorageError::from)
                .map(|done| done.rows_affected());
            if !matches!(result, Err(StorageError::TenantViolation)) {
                failures.push(format!(
                    "inserting into {table} naming {} with no tenant context gave {result:?}, \
                     not TenantViolation",
                    owner.tag()
                ));
            }
        }
    }
    all_ok("missing tenant context did not fail closed", failures)
}

// ---------------------------------------------------------------------------
// The property test.
// ---------------------------------------------------------------------------

async fn isolation_case(tdb: &TestDb, case: Case) -> Check {
    let a = write_tenant(tdb, &case, &case.a).await?;
    let b = write_tenant(tdb, &case, &case.b).await?;
    check_reads(tdb, &case, &a, &b).await?;
    check_reads(tdb, &case, &b, &a).await?;
    check_forged_writes(tdb, &case, &a, &b).await?;
    check_forged_writes(tdb, &case, &b, &a).await?;
    check_no_context(tdb, &case, &a, &b).await?;
    check_repo_writes_at_other(tdb, &case, &a, &b).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime builds")
}

fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        // Each case creates two tenants; keep shrinking bounded.
        max_shrink_iters: 64,
        // Never write regression files into the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn run_isolation_property(
    rt: &tokio::runtime::Runtime,
    tdb: &TestDb,
    cases: u32,
) -> Result<(), String> {
    let mut runner = TestRunner::new(proptest_config(cases));
    runner
        .run(&case_strategy(), |case| {
            rt.block_on(isolation_case(tdb, case))
        })
        .map_err(|e| e.to_string())
}

#[test]
fn repository_functions_never_cross_tenants() {
    let rt = runtime();
    let tdb = rt.block_on(TestDb::new());
    let result = run_isolation_property(&rt, &tdb, 24);
    rt.block_on(tdb.close());
    if let Err(e) = result {
        panic!("tenant isolation violated: {e}");
    }
}

// ---------------------------------------------------------------------------
// Bulk UPDATE / DELETE on every tenant table stays inside the tenant.
// ---------------------------------------------------------------------------

/// One fixed case, drawn deterministically from the same strategy.
fn fixed_case() -> Check<Case> {
    let mut runner = TestRunner::deterministic();
    let tree = case_strategy()
        .new_tree(&mut runner)
        .map_err(|e| TestCaseError::fail(format!("no case: {e}")))?;
    Ok(tree.current())
}

/// Writes one row per table that no repository function fills.
async fn seed_other_tables(tdb: &TestDb, case: &Case, owner: &Tenant) -> Check {
    let mut tx = tdb
        .db()
        .tenant(owner.id)
        .await
        .ctx("open tenant transaction")?;
    for (table, stmt) in rows_owned_by(owner, case) {
        stmt.execute(tx.conn())
            .await
            .ctx(&format!("seed {table} for {}", owner.tag()))?;
    }
    tx.commit().await.ctx("commit seed")
}

/// Rows of `table` that belong to `id` (by column, not by policy), counted
/// in the given connection.
async fn own_rows(conn: &mut sqlx::PgConnection, table: &str, id: CustomerId) -> Check<i64> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE customer_id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
    .ctx(&format!("count {table}"))
}

/// Per table, the rows `tenant` owns as seen from its own transaction. A
/// table in which the transaction also sees other tenants' rows is a failure.
async fn own_counts(
    tdb: &TestDb,
    tenant: &Tenant,
    tables: &[(String, String, bool)],
    failures: &mut Vec<String>,
) -> Check<Vec<i64>> {
    let mut tx = tdb
        .db()
        .tenant(tenant.id)
        .await
        .ctx("open tenant transaction")?;
    let mut out = Vec::with_capacity(tables.len());
    for (name, quoted, _) in tables {
        let visible = count(tx.conn(), quoted).await?;
        let own = own_rows(tx.conn(), quoted, tenant.id).await?;
        if visible != own {
            failures.push(format!(
                "{}'s transaction sees {} rows of other tenants in {name}",
                tenant.tag(),
                visible - own
            ));
        }
        out.push(own);
    }
    tx.rollback().await.ctx("rollback")?;
    Ok(out)
}

fn affected(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

async fn bulk_writes_stay_in_tenant(tdb: &TestDb) -> Check {
    let db = tdb.db();
    let case = fixed_case()?;
    let a = write_tenant(tdb, &case, &case.a).await?;
    let b = write_tenant(tdb, &case, &case.b).await?;
    seed_other_tables(tdb, &case, &a).await?;
    seed_other_tables(tdb, &case, &b).await?;

    let mut platform = db.platform().await.ctx("open platform transaction")?;
    let tables: Vec<_> = tenant_relations(&mut platform)
        .await?
        .into_iter()
        .filter(|(_, _, is_table)| *is_table)
        .collect();
    platform.rollback().await.ctx("rollback")?;

    let mut failures = Vec::new();
    let a_before = own_counts(tdb, &a, &tables, &mut failures).await?;
    let b_before = own_counts(tdb, &b, &tables, &mut failures).await?;
    for (i, (name, _, _)) in tables.iter().enumerate() {
        if a_before[i] == 0 || b_before[i] == 0 {
            failures.push(format!(
                "{name} has {} rows for A and {} for B; seed it (rows_owned_by) so the \
                 check is not vacuous",
                a_before[i], b_before[i]
            ));
        }
    }

    for (i, (name, quoted, _)) in tables.iter().enumerate() {
        // UPDATE as A, committed: it must rewrite exactly A's rows.
        let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
        let updated = sqlx::query(&format!("UPDATE {quoted} SET customer_id = customer_id"))
            .execute(tx.conn())
            .await
            .ctx(&format!("UPDATE {name} as A"))?
            .rows_affected();
        let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::xid::text")
            .fetch_one(tx.conn())
            .await
            .ctx("read xid")?;
        tx.commit().await.ctx("commit UPDATE")?;
        if affected(updated) != a_before[i] {
            failures.push(format!(
                "UPDATE {name} SET customer_id = customer_id as A affected {updated} rows, \
                 but A owns {}: it reached other tenants' rows",
                a_before[i]
            ));
        }
        // Rows whose current version was written by A's UPDATE, per owner.
        let by_update =
            format!("SELECT count(*) FROM {quoted} WHERE customer_id = $1 AND xmin::text = $2");
        let mut tx = db.tenant(b.id).await.ctx("open tenant transaction")?;
        let b_now = own_rows(tx.conn(), quoted, b.id).await?;
        let b_rewritten: i64 = sqlx::query_scalar(&by_update)
            .bind(b.id)
            .bind(&xid)
            .fetch_one(tx.conn())
            .await
            .ctx("count B's rows written by A's UPDATE")?;
        tx.rollback().await.ctx("rollback")?;
        if b_now != b_before[i] || b_rewritten != 0 {
            failures.push(format!(
                "after A's UPDATE of {name}, B has {b_now} rows (had {}) and A's transaction \
                 rewrote {b_rewritten} of them",
                b_before[i]
            ));
        }
        let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
        let a_rewritten: i64 = sqlx::query_scalar(&by_update)
            .bind(a.id)
            .bind(&xid)
            .fetch_one(tx.conn())
            .await
            .ctx("count A's rows written by A's UPDATE")?;
        tx.rollback().await.ctx("rollback")?;
        if a_rewritten != a_before[i] {
            failures.push(format!(
                "A's UPDATE of {name} rewrote {a_rewritten} of A's {} rows (xmin check broken?)",
                a_before[i]
            ));
        }

        // DELETE as A, rolled back: it must remove exactly A's rows.
        let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
        let deleted = sqlx::query(&format!("DELETE FROM {quoted}"))
            .execute(tx.conn())
            .await
            .ctx(&format!("DELETE FROM {name} as A"))?
            .rows_affected();
        tx.rollback().await.ctx("rollback DELETE")?;
        if affected(deleted) != a_before[i] {
            failures.push(format!(
                "DELETE FROM {name} as A affected {deleted} rows, but A owns {}: it reached \
                 other tenants' rows",
                a_before[i]
            ));
        }
    }

    // Finally DELETE everything as A and commit: B keeps every row.
    let mut tx = db.tenant(a.id).await.ctx("open tenant transaction")?;
    for (name, quoted, _) in &tables {
        sqlx::query(&format!("DELETE FROM {quoted}"))
            .execute(tx.conn())
            .await
            .ctx(&format!("DELETE FROM {name} as A"))?;
    }
    tx.commit().await.ctx("commit DELETE")?;
    let a_after = own_counts(tdb, &a, &tables, &mut failures).await?;
    let b_after = own_counts(tdb, &b, &tables, &mut failures).await?;
    for (i, (name, _, _)) in tables.iter().enumerate() {
        if b_after[i] != b_before[i] {
            failures.push(format!(
                "A's committed DELETE FROM {name} changed B's row count from {} to {}",
                b_before[i], b_after[i]
            ));
        }
        if a_after[i] != 0 {
            failures.push(format!(
                "A's committed DELETE FROM {name} left {} of A's rows",
                a_after[i]
            ));
        }
    }
    all_ok("bulk writes as A reached B's rows", failures)
}

#[tokio::test]
async fn bulk_update_and_delete_in_one_tenant_never_touch_another() {
    let tdb = TestDb::new().await;
    let result = bulk_writes_stay_in_tenant(&tdb).await;
    tdb.close().await;
    if let Err(e) = result {
        panic!("{e}");
    }
}
