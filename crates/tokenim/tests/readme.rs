//! The README's integration example, run as written: the `serve` line of
//! its "Chat inside your product" section starts the real binary (on a
//! free port and a temporary data directory, nothing else added), and the
//! shell block marked `readme-integration` runs in bash with `curl` and
//! `python3`, its `cargo run --release --` standing for this build's
//! binary and its `http://127.0.0.1:8080` (also the terminal client's
//! default, given as `TOKENIM_URL`) for the server's address. The
//! history it prints must show the system's notice and the buyer's
//! question, in that order.

use std::process::Stdio;

use tokenim_testkit::{free_port, init_crypto};
use tokio::process::Command;

const README: &str = include_str!("../../../README.md");

/// The first ```sh block after `after` in the README.
fn block_after(after: &str) -> String {
    let at = README
        .find(after)
        .unwrap_or_else(|| panic!("the README has no {after:?}"));
    let rest = &README[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block ends");
    rest[start..start + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integration_example_runs_as_written() {
    init_crypto();
    let serve = block_after("### Chat inside your product");
    let flags: Vec<&str> = serve
        .trim()
        .strip_prefix("cargo run --release -- serve")
        .expect("the section starts the server")
        .split_whitespace()
        .collect();
    assert!(!flags.is_empty(), "{serve}");
    let script = block_after("<!-- readme-integration");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_tokenim");
    let mut server = Command::new(bin)
        .arg("serve")
        .args(&flags)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tokenim serve");
    tokenim_testkit::wait_listening(&mut server).await;

    let script = script
        .replace("http://127.0.0.1:8080", &url)
        .replace("cargo run --release --", &format!("'{bin}'"));
    let home = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        tokenim_testkit::WAIT * 6,
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(home.path())
            .env("TOKENIM_HOME", home.path())
            // The terminal client's default address is the README's.
            .env("TOKENIM_URL", &url)
            .env_remove("TOKENIM_TOKEN")
            .env_remove("TOKENIM_USER")
            .env_remove("TOKENIM_PASSWORD")
            .env_remove("TOKENIM_DEVICE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example finished in time")
    .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let paid = stdout.find("Order 1001 is paid");
    let asked = stdout.rfind("Thanks! When does it ship?");
    assert!(
        matches!((paid, asked), (Some(p), Some(a)) if p < a),
        "the history shows the notice, then the question:\n{stdout}"
    );
    // The PUTs answered the users, the server's answers are JSON.
    assert!(stdout.contains(r#""user_id":"buyer:1""#), "{stdout}");
    // Registration is closed, as the serve line says.
    let r = tokenim_testkit::Http::new(&url)
        .post(
            "/v1/accounts",
            serde_json::json!({"username": "eve", "password": "password1"}),
        )
        .await;
    assert_eq!(r.status, 403);
    server.kill().await.ok();
}
