//! The binary's configuration surfaces: a TOML file with `[limits]`,
//! environment variables, flags (which win), and JSON logs.

use std::process::Stdio;

use serde_json::{Value, json};
use tokenim_testkit::{Http, Ws, free_port, init_crypto};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn file_env_and_flags_with_json_logs() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("tokenim.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nargon2_memory_kib = 8\nargon2_iterations = 1\n\
             [limits]\nheartbeat_ms = 7000\nmax_content_bytes = 100\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenim"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json"])
        .env("TOKENIM_LIMITS_HEARTBEAT_MS", "9000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first lines are JSON objects; one of them says it is listening.
    let listening = tokio::time::timeout(tokenim_testkit::WAIT, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&l).expect("a JSON log line");
            if v["fields"]["message"] == "listening" {
                return v;
            }
        }
        panic!("no listening line")
    })
    .await
    .expect("started in time");
    assert_eq!(listening["level"], "INFO");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let c = Http::new(&format!("http://127.0.0.1:{port}"));
    c.register("alice").await;
    let bob = c.register("bob").await;
    let a = c.login("alice", "d").await;
    let conv = a.direct(&bob).await;
    // The environment overrides the file's heartbeat; the file's content
    // limit holds.
    let mut ws = Ws::connect(&format!("ws://127.0.0.1:{port}/v1/ws")).await;
    ws.send(json!({"type": "auth", "token": a.token()})).await;
    assert_eq!(ws.recv().await["heartbeat_ms"], 9000);
    assert_eq!(ws.send_msg(&conv, "small", "ok").await["type"], "send_ack");
    let big = "x".repeat(200);
    assert_eq!(ws.send_msg(&conv, "big", &big).await["code"], "too_large");
    assert!(
        dir.path().join("data").join("token.key").exists(),
        "data_dir from the file"
    );
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenim"))
        .args(["serve", "--limit", "heartbeat_ms=abc"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--limit heartbeat_ms=abc"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_tokenim"))
        .args(["serve", "--limit", "no_such_limit=1"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown limit"));
}
