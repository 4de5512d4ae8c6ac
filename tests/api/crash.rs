//! Crash recovery with the real binary: `switchboard serve` is killed with
//! SIGKILL in the middle of a call, then started again on the same
//! database.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use switchboard::callsim::{self, CallSpec, Step};
use switchboard::configuration::Settings;
use switchboard::db::{CustomerId, Db};
use switchboard::repo::calls::Call;
use switchboard::startup::Runtime;

use crate::helpers::{
    drop_database, fixture_clip, tenant_input, test_env, PUBLIC_URL, TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
};
use crate::process::serve;

/// The tenant's number.
const NUMBER: &str = "+15550006000";

/// A turn as compared before and after the restart.
type StoredTurn = (i32, String, String, bool);

/// The call row (if the webhook created it yet) and its turns, read as the
/// tenant through the application role.
async fn stored(db: &Db, customer: CustomerId, call_sid: &str) -> Option<(Call, Vec<StoredTurn>)> {
    let mut tx = db.tenant(customer).await.expect("tenant transaction");
    let call = switchboard::repo::calls::get_by_sid(&mut tx, call_sid)
        .await
        .expect("call query")?;
    let turns = switchboard::repo::turns::list(&mut tx, call.call_id)
        .await
        .expect("transcript query")
        .into_iter()
        .map(|t| (t.seq, t.speaker, t.text, t.interrupted))
        .collect();
    tx.rollback().await.expect("rollback");
    Some((call, turns))
}

/// The summary text and its source, once the post-call job has written it.
async fn summary(db: &Db, customer: CustomerId, call: &Call) -> Option<(String, String)> {
    let mut tx = db.tenant(customer).await.expect("tenant transaction");
    let row = sqlx::query_as("SELECT summary, source FROM call_summaries WHERE call_id = $1")
        .bind(call.call_id)
        .fetch_optional(tx.conn())
        .await
        .expect("summary query");
    tx.rollback().await.expect("rollback");
    row
}

/// True once the transcript holds a caller turn and an agent turn after it.
fn caller_answered(turns: &[StoredTurn]) -> bool {
    turns
        .iter()
        .find(|(_, speaker, text, _)| speaker == "caller" && !text.is_empty())
        .is_some_and(|(caller_seq, ..)| {
            turns.iter().any(|(seq, speaker, text, _)| {
                seq > caller_seq && speaker == "agent" && !text.is_empty()
            })
        })
}

#[tokio::test]
async fn a_call_cut_by_sigkill_is_closed_as_interrupted_and_summarised_on_restart() {
    let (env, database) = test_env();
    // The test's own handle on the database (application role): creates it,
    // sets up the tenant, and reads what the server wrote.
    let settings = Settings::load_from(None, &env).expect("settings");
    let runtime = Runtime::open(&settings).await.expect("database opens");
    let db = runtime.platform.db().clone();
    let customer = runtime
        .platform
        .create_tenant("test", tenant_input("crash", NUMBER))
        .await
        .expect("tenant")
        .customer
        .customer_id;

    let first = serve(&env).await;
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    let spec = CallSpec {
        server: format!("http://{}", first.addr),
        public_url: PUBLIC_URL.into(),
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: TWILIO_AUTH_TOKEN.into(),
        from: "+15557654321".into(),
        to: NUMBER.into(),
        call_sid: call_sid.clone(),
        // Greeting, one question and its answer, then the line stays open.
        script: vec![
            Step::WaitAgent {
                timeout: Duration::from_secs(10),
            },
            Step::Say(fixture_clip("question.wav")),
            Step::Silence(Duration::from_millis(800)),
            Step::WaitAgent {
                timeout: Duration::from_secs(10),
            },
            Step::Silence(Duration::from_secs(600)),
        ],
        fuzz: 0,
    };
    let caller = tokio::spawn(async move { callsim::place_call(&spec).await });

    // Mid-call: the caller's turn and the agent's reply are stored.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some((_, turns)) = stored(&db, customer, &call_sid).await {
                if caller_answered(&turns) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the caller's turn and the agent's reply were stored during the call");
    assert!(!caller.is_finished(), "the call is still live");

    first.signal(Signal::SIGKILL);
    let (status, _) = first.exited().await;
    assert_eq!(
        status.signal(),
        Some(Signal::SIGKILL as i32),
        "killed: {status}"
    );
    caller.abort();

    // The crash left the call open, with every turn written so far.
    let (call, before) = stored(&db, customer, &call_sid)
        .await
        .expect("the call row survived");
    assert!(
        call.ended_at.is_none() && ["ringing", "in-progress"].contains(&call.status.as_str()),
        "left open by the crash: {call:?}"
    );
    assert!(caller_answered(&before), "{before:?}");
    println!(
        "at the kill: {} ({} turns) {before:?}",
        call.status,
        before.len()
    );
    assert!(summary(&db, customer, &call).await.is_none());

    // Restart on the same database: recovery closes the call, and the new
    // server's job runner writes its summary.
    let second = serve(&env).await;
    let (call, summary) = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some((call, _)) = stored(&db, customer, &call_sid).await {
                if let Some(summary) = summary(&db, customer, &call).await {
                    return (call, summary);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the restarted server summarised the interrupted call");
    assert_eq!(call.status, "interrupted", "{call:?}");
    assert_eq!(call.end_reason.as_deref(), Some("interrupted"), "{call:?}");
    let ended = call.ended_at.expect("an end time");
    assert!(ended >= call.started_at, "{call:?}");
    let (text, source) = summary;
    println!("after the restart: {call:?}\nsummary ({source}): {text}");
    assert!(!text.trim().is_empty(), "a summary");
    assert_eq!(source, "heuristic", "no model is configured: {text}");
    let (_, after) = stored(&db, customer, &call_sid).await.expect("call");
    assert_eq!(after, before, "the transcript is unchanged by the restart");

    second.signal(Signal::SIGTERM);
    let (status, logs) = second.exited().await;
    assert!(status.success(), "exit status {status}\n{logs}");
    assert!(
        logs.contains("closed calls left open by an earlier crash"),
        "{logs}"
    );
    runtime.close().await.expect("close");
    drop_database(&database).await;
}
