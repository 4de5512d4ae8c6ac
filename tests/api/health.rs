//! Liveness, readiness, and draining on shutdown.

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_and_the_server_stops_cleanly() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["migrations"], "current");

    let addr = app.addr;
    app.stop().await.expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open after stop"
    );
}
