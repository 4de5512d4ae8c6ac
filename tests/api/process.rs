//! The real binary as an operator runs it: CLI commands and `serve` with
//! SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{drop_database, test_env};

fn switchboard(env: &std::collections::BTreeMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run_ok(env: &std::collections::BTreeMap<String, String>, args: &[&str]) -> String {
    let output = switchboard(env).args(args).output().await.expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "switchboard {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn cli_commands_work_and_keys_print_alone_on_the_last_line() {
    let (env, database) = test_env();
    run_ok(&env, &["migrate"]).await;
    let created = run_ok(
        &env,
        &[
            "tenant",
            "create",
            "--template",
            "insurance",
            "--name",
            "Peterson Insurance",
            "--slug",
            "peterson",
            "--number",
            "+18005551212",
        ],
    )
    .await;
    assert!(created.contains("created tenant peterson"), "{created}");
    let listed = run_ok(&env, &["tenant", "list"]).await;
    assert!(
        listed.contains("peterson") && listed.contains("1 tenant(s)"),
        "{listed}"
    );
    let shown = run_ok(&env, &["tenant", "show", "peterson", "--json"]).await;
    let details: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(details["numbers"][0]["e164"], "+18005551212");
    run_ok(&env, &["tenant", "suspend", "peterson"]).await;
    run_ok(&env, &["number", "assign", "peterson", "+18005551313"]).await;
    run_ok(&env, &["number", "release", "+18005551313"]).await;

    for args in [
        vec!["apikey", "create", "--platform"],
        vec!["apikey", "create", "--service"],
        vec!["apikey", "create", "--tenant", "peterson"],
    ] {
        let out = run_ok(&env, &args).await;
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("sbk_") && !last.contains(' ') && last.len() == 46,
            "key not alone on the last line: {out}"
        );
    }

    // Secrets come from standard input, never argv, and never print back.
    let mut child = switchboard(&env)
        .args(["credentials", "set", "peterson", "--provider", "elevenlabs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"xi-very-secret-key-9876\n")
            .await
            .expect("write");
    }
    let output = child.wait_with_output().await.expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("…9876") && !printed.contains("xi-very-secret"),
        "{printed}"
    );
    let rotated = run_ok(&env, &["keys", "rotate"]).await;
    assert!(
        rotated.contains("re-sealed 0 credential(s) under key v1"),
        "{rotated}"
    );

    // config check masks what it must.
    let config = run_ok(&env, &["config", "check"]).await;
    let key = env.get("SWITCHBOARD_MASTER_KEY").expect("key");
    assert!(
        !config.contains(key.as_str()) && config.contains("master_key = \"********\""),
        "{config}"
    );

    // Bad input: a clear error and a failing exit code.
    let output = switchboard(&env)
        .args([
            "tenant",
            "create",
            "--template",
            "insurance",
            "--name",
            "X",
            "--slug",
            "x2",
            "--number",
            "555-1212",
        ])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("E.164"));
    drop_database(&database).await;
}

/// A `switchboard serve` child process that has announced its address.
pub(crate) struct Served {
    /// The process.
    pub child: tokio::process::Child,
    /// The address it listens on (`127.0.0.1:PORT`).
    pub addr: String,
    /// Keeps reading its (JSON) log lines so the child never blocks on a
    /// full pipe; yields all of them once it exits.
    pub logs: tokio::task::JoinHandle<Vec<String>>,
}

impl Served {
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("the server is still running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
            signal,
        )
        .expect("signal");
    }

    /// Waits for the process to exit (60 s at most, a safety net), then
    /// for its remaining log lines.
    pub async fn exited(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server exited")
            .expect("wait");
        let logs = self.logs.await.expect("log reader").join("\n");
        (status, logs)
    }
}

/// Starts `switchboard serve` with `env` (JSON logs at info level) and
/// waits until it says it is listening.
pub(crate) async fn serve(env: &std::collections::BTreeMap<String, String>) -> Served {
    let mut env = env.clone();
    env.insert("SWITCHBOARD_LOG_FORMAT".into(), "json".into());
    env.insert("SWITCHBOARD_LOG_LEVEL".into(), "info".into());
    let mut child = switchboard(&env)
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let addr = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .filter(|v| v["message"] == "switchboard listening")
                .and_then(|v| v["addr"].as_str().map(str::to_string));
            seen.push(line);
            if addr.is_some() {
                return addr;
            }
        }
        None
    })
    .await
    .expect("server announced its address in time")
    .unwrap_or_else(|| panic!("no listening line:\n{}", seen.join("\n")));
    let logs = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    Served { child, addr, logs }
}

#[tokio::test]
async fn serve_answers_probes_and_stops_cleanly_on_sigterm() {
    let (env, database) = test_env();
    let server = serve(&env).await;

    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("http://{}{path}", server.addr))
            .send()
            .await
            .expect("probe");
        assert_eq!(response.status(), 200, "{path}");
    }

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, rest) = server.exited().await;
    assert!(status.success(), "exit status {status}");
    assert!(rest.contains("shutdown requested"), "{rest}");
    assert!(rest.contains("\"stopped\""), "{rest}");
    drop_database(&database).await;
}
