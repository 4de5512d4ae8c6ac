//! End to end through the real server: the call simulator signs the voice
//! webhook, follows the TwiML, opens the media websocket and talks to the
//! fake providers over real HTTP and websockets on loopback.

use switchboard::callsim::{self, Answer, CallSpec, Step};

use crate::helpers::{
    call_transcript, fixture_clip, spawn_app, tenant_input, TestApp, PUBLIC_URL,
    TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
};

fn spec(app: &TestApp, to: &str, script: Vec<Step>) -> CallSpec {
    CallSpec {
        server: app.address.clone(),
        public_url: PUBLIC_URL.into(),
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: TWILIO_AUTH_TOKEN.into(),
        from: "+15557654321".into(),
        to: to.into(),
        call_sid: format!("CA{}", uuid::Uuid::new_v4().simple()),
        script,
        fuzz: 0,
    }
}

#[tokio::test]
async fn a_call_with_two_turns_and_a_barge_in() {
    let app = spawn_app().await;
    let tenant = app
        .platform
        .create_tenant("test", tenant_input("simcall", "+15550004000"))
        .await
        .expect("tenant");
    let interruption = {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/audio/interruption.wav");
        callsim::parse_script(&[
            "--interrupt-after".into(),
            "0.4s".into(),
            path.display().to_string(),
        ])
        .expect("script")
    };
    let mut script = vec![
        Step::WaitAgent {
            timeout: std::time::Duration::from_secs(10),
        },
        Step::Say(fixture_clip("question.wav")),
        Step::Silence(std::time::Duration::from_millis(800)),
        Step::WaitAgent {
            timeout: std::time::Duration::from_secs(10),
        },
        Step::Say(fixture_clip("greeting_reply.wav")),
    ];
    script.extend(interruption);
    script.push(Step::Silence(std::time::Duration::from_millis(800)));
    script.push(Step::WaitAgent {
        timeout: std::time::Duration::from_secs(10),
    });
    script.push(Step::Hangup);
    let spec = spec(&app, "+15550004000", script);
    let report = callsim::place_call(&spec).await.expect("call placed");
    println!("{}", callsim::render_report(&report));
    assert_eq!(report.answer, Some(Answer::Streamed));
    assert!(
        report.off_spec.is_empty(),
        "off-spec frames: {:?}",
        report.off_spec
    );
    let answered = report
        .turns
        .iter()
        .filter(|t| t.first_agent_audio.is_some())
        .count();
    assert!(
        answered >= 2,
        "two caller turns answered: {:?}",
        report.turns
    );
    assert_eq!(report.barge_ins.len(), 1);
    assert!(
        report.barge_ins[0].clear.is_some(),
        "the barge-in got a clear: {:?}",
        report.barge_ins
    );
    assert!(report.marks_echoed > 0);
    assert_eq!(
        report.audio_after_clear, 0,
        "no audio of the interrupted turn after the clear"
    );

    // The transcript was written as the call went.
    let (_, turns) = call_transcript(
        app.platform.db(),
        tenant.customer.customer_id,
        &spec.call_sid,
    )
    .await;
    let callers = turns.iter().filter(|t| t.speaker == "caller").count();
    assert!(callers >= 2, "{turns:?}");
    assert!(
        turns.iter().any(|t| t.speaker == "agent" && t.interrupted),
        "{turns:?}"
    );
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unknown_number_is_rejected_before_any_stream() {
    let app = spawn_app().await;
    let report = callsim::place_call(&spec(&app, "+15550009999", vec![Step::Hangup]))
        .await
        .expect("webhook answered");
    assert_eq!(report.answer, Some(Answer::Rejected));
    assert!(report.twiml.contains("<Reject"), "{}", report.twiml);
    assert!(report.agent_audio.is_empty());
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn ten_thousand_malformed_messages_across_twenty_calls_break_nothing() {
    let app = spawn_app().await;
    let tenant = app
        .platform
        .create_tenant("test", tenant_input("fuzzed", "+15550005000"))
        .await
        .expect("tenant");
    let question = fixture_clip("question.wav");
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut spec = spec(
            &app,
            "+15550005000",
            vec![
                Step::WaitAgent {
                    timeout: std::time::Duration::from_secs(10),
                },
                Step::Say(question.clone()),
                Step::Silence(std::time::Duration::from_millis(800)),
                Step::WaitAgent {
                    timeout: std::time::Duration::from_secs(10),
                },
                Step::Hangup,
            ],
        );
        // Even calls are fuzzed: 10 × 1,000 malformed messages.
        spec.fuzz = if i % 2 == 0 { 1_000 } else { 0 };
        calls.push(tokio::spawn(async move {
            (spec.clone(), callsim::place_call(&spec).await)
        }));
    }
    let mut fuzz_sent = 0;
    let mut clean_sids = Vec::new();
    for call in calls {
        let (spec, report) = call.await.expect("simulator task did not panic");
        let report = report.expect("call placed");
        assert_eq!(report.answer, Some(Answer::Streamed));
        assert!(
            report.off_spec.is_empty(),
            "server sent off-spec frames: {:?}",
            report.off_spec
        );
        assert!(!report.agent_audio.is_empty(), "every call was greeted");
        fuzz_sent += report.fuzz_sent;
        if spec.fuzz == 0 {
            assert!(
                report.turns.iter().any(|t| t.first_agent_audio.is_some()),
                "a clean call was answered: {:?}",
                report.turns
            );
            clean_sids.push(spec.call_sid.clone());
        }
    }
    assert_eq!(fuzz_sent, 10_000);
    // The server is alive and the clean calls' transcripts are complete.
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    for sid in clean_sids {
        let (_, turns) =
            call_transcript(app.platform.db(), tenant.customer.customer_id, &sid).await;
        assert!(
            turns.iter().any(|t| t.speaker == "caller"),
            "{sid}: {turns:?}"
        );
        assert!(
            turns.iter().filter(|t| t.speaker == "agent").count() >= 2,
            "{sid}: {turns:?}"
        );
    }
    app.stop().await.expect("stop");
}
