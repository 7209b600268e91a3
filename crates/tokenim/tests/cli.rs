//! The one-shot client commands end to end: a real server in-process, the
//! built `tokenim` binary run as a child process.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokenim_testkit::TestServer;
use tokio::io::AsyncWriteExt;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `tokenim ARGS` against `server`, with its home folder in `home`,
/// `env` added, and `stdin` written to it.
async fn tokenim(
    server: &TestServer,
    home: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenim"));
    cmd.args(args)
        .env_remove("TOKENIM_USER")
        .env_remove("TOKENIM_PASSWORD")
        .env_remove("TOKENIM_DEVICE")
        .env_remove("TOKENIM_TOKEN")
        .env("TOKENIM_URL", &server.http)
        .env("TOKENIM_HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn tokenim");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tokenim {args:?} did not finish"))
        .expect("tokenim output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_send_and_read_history_as_json() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let alice_env = [("TOKENIM_USER", "alice"), ("TOKENIM_PASSWORD", "password1")];
    let bob_flags = ["--user", "bob", "--password", "password1"];

    // Register: by flags, and by environment.
    let r = tokenim(&server, h, &alice_env, &["register", "--json"], None)
        .await
        .json();
    let alice_id = r["user_id"].as_str().unwrap().to_owned();
    assert_eq!(r["username"], "alice");
    let mut args = vec!["register", "--json"];
    args.extend(bob_flags);
    let bob_id = tokenim(&server, h, &[], &args, None).await.json()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(alice_id, bob_id);

    // A taken name fails loudly.
    let dup = tokenim(&server, h, &alice_env, &["register"], None).await;
    assert_ne!(dup.code, 0);
    assert!(dup.stderr.contains("conflict"), "{}", dup.stderr);

    // The device ID is made once and kept.
    let l1 = tokenim(&server, h, &alice_env, &["login", "--json"], None)
        .await
        .json();
    let l2 = tokenim(&server, h, &alice_env, &["login", "--json"], None)
        .await
        .json();
    assert_eq!(l1["user_id"], alice_id);
    assert_eq!(l1["device_id"], l2["device_id"]);
    assert!(l1["device_id"].as_str().unwrap().starts_with("cli-"));
    assert!(!l1["token"].as_str().unwrap().is_empty());

    // Send: to a user by name, idempotent with a fixed key, from stdin.
    let s1 = tokenim(
        &server,
        h,
        &alice_env,
        &["send", "--to", "bob", "--json", "hello", "bob"],
        None,
    )
    .await
    .json();
    assert_eq!(s1["seq"], 1);
    assert_eq!(s1["status"], "sent");
    let conv = s1["conv_id"].as_str().unwrap().to_owned();
    let again = [
        "send",
        "--to",
        "bob",
        "--client-msg-id",
        "fixed-1",
        "--json",
        "again",
    ];
    let s2 = tokenim(&server, h, &alice_env, &again, None).await.json();
    let s2b = tokenim(&server, h, &alice_env, &again, None).await.json();
    assert_eq!(s2["seq"], 2);
    assert_eq!(s2b["seq"], 2, "a repeated client_msg_id sends nothing new");
    assert_eq!(s2["msg_id"], s2b["msg_id"]);
    let s3 = tokenim(
        &server,
        h,
        &alice_env,
        &["send", "--conv", &conv, "--json"],
        Some("from stdin\n"),
    )
    .await
    .json();
    assert_eq!(s3["seq"], 3);

    // History as bob, as JSON: the protocol's event objects, in order.
    let mut args = vec!["history", "--with", "alice", "--json"];
    args.extend(bob_flags);
    let hist = tokenim(&server, h, &[], &args, None).await.json();
    assert_eq!(hist["conv_id"], conv.as_str());
    assert_eq!(hist["has_more"], false);
    let events = hist["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let texts: Vec<&str> = events
        .iter()
        .map(|e| e["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello bob", "again", "from stdin"]);
    for e in events {
        assert_eq!(e["sender"], alice_id.as_str());
        assert_eq!(e["kind"], "message");
        assert_eq!(e["content"]["type"], "text");
    }
    assert_eq!(events[1]["client_msg_id"], "fixed-1");

    // Paging: the newest one before seq 3.
    let mut args = vec![
        "history", "--conv", &conv, "--before", "3", "--limit", "1", "--json",
    ];
    args.extend(bob_flags);
    let page = tokenim(&server, h, &[], &args, None).await.json();
    assert_eq!(page["events"][0]["seq"], 2);
    assert_eq!(page["has_more"], true);

    // Human output.
    let mut args = vec!["history", "--with", "alice"];
    args.extend(bob_flags);
    let text = tokenim(&server, h, &[], &args, None).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("alice: hello bob"), "{}", text.stdout);

    // A group, and bob's conversations with unread counts.
    let g = tokenim(
        &server,
        h,
        &alice_env,
        &["group", "--title", "team", "--json", "bob"],
        None,
    )
    .await
    .json();
    assert_eq!(g["type"], "group");
    assert_eq!(g["title"], "team");
    assert_eq!(g["member_count"], 2);
    let mut args = vec!["conversations", "--json"];
    args.extend(bob_flags);
    let convs = tokenim(&server, h, &[], &args, None).await.json();
    let convs = convs["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2);
    let direct = convs
        .iter()
        .find(|c| c["conv_id"] == conv.as_str())
        .unwrap();
    assert_eq!(direct["unread"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_with_a_message() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let no_pw = tokenim(
        &server,
        h,
        &[],
        &["send", "--user", "x", "--to", "y", "hi"],
        None,
    )
    .await;
    assert_ne!(no_pw.code, 0);
    assert!(
        no_pw.stderr.contains("TOKENIM_PASSWORD"),
        "{}",
        no_pw.stderr
    );

    let env = [("TOKENIM_USER", "carol"), ("TOKENIM_PASSWORD", "password1")];
    tokenim(&server, h, &env, &["register", "--json"], None)
        .await
        .json();
    let nobody = tokenim(&server, h, &env, &["send", "--to", "nobody", "hi"], None).await;
    assert_ne!(nobody.code, 0);
    assert!(nobody.stderr.contains("nobody"), "{}", nobody.stderr);
    let wrong = tokenim(
        &server,
        h,
        &[
            ("TOKENIM_USER", "carol"),
            ("TOKENIM_PASSWORD", "wrong-pass"),
            ("RUST_BACKTRACE", "1"),
        ],
        &["login"],
        None,
    )
    .await;
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("unauthorized"), "{}", wrong.stderr);
    // One clear line, whatever RUST_BACKTRACE says.
    assert_eq!(wrong.stderr.lines().count(), 1, "{}", wrong.stderr);
    assert!(
        wrong.stderr.starts_with("error: logging in as carol: "),
        "{}",
        wrong.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_serves_many_commands_under_the_login_limit() {
    // The server's own login limit: a burst of 4 per IP (two
    // registrations, the login, and one more login after a logout).
    let server = TestServer::start_with(|c| {
        c.limits.login_burst = 4;
        c.limits.login_rate_per_min = 1;
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let http = server.client();
    http.register("dana").await;
    http.register("erin").await;
    let login = tokenim(
        &server,
        h,
        &[],
        &[
            "login",
            "--user",
            "dana",
            "--password",
            "password1",
            "--json",
        ],
        None,
    )
    .await
    .json();
    // Kept for this user only, readable by nobody else.
    let file = h.join("sessions.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(kept.contains(login["token"].as_str().unwrap()));
    // Ten sends in a row, with and without --user, no password, no new
    // login: the limit would refuse the second.
    for i in 0..10 {
        let text = format!("note {i}");
        let mut args = vec!["send", "--to", "erin", text.as_str()];
        if i % 2 == 0 {
            args.extend(["--user", "dana"]);
        }
        let out = tokenim(&server, h, &[], &args, None).await;
        assert_eq!(out.code, 0, "send {i}: {}", out.stderr);
    }
    let hist = tokenim(
        &server,
        h,
        &[],
        &["history", "--with", "erin", "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(hist["events"].as_array().unwrap().len(), 10);
    // Logged out elsewhere: the kept session is dropped and the next
    // command logs in again with the password it is given.
    let r = http
        .with_token(login["token"].as_str().unwrap())
        .delete("/v1/sessions/current")
        .await;
    assert_eq!(r.status, 204);
    let out = tokenim(&server, h, &[], &["conversations", "--user", "dana"], None).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("TOKENIM_PASSWORD"), "{}", out.stderr);
    let out = tokenim(
        &server,
        h,
        &[],
        &["conversations", "--user", "dana", "--password", "password1"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_command_quietly() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let env = [("TOKENIM_USER", "fay"), ("TOKENIM_PASSWORD", "password1")];
    tokenim(&server, home.path(), &env, &["register"], None).await;
    server.client().register("gus").await;
    for i in 0..3 {
        let t = format!("m{i}");
        let out = tokenim(
            &server,
            home.path(),
            &env,
            &["send", "--to", "gus", &t],
            None,
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    // Standard output closed before the command writes: `| head -0`.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenim"));
    cmd.args(["history", "--with", "gus"])
        .env("TOKENIM_URL", &server.http)
        .env("TOKENIM_HOME", home.path())
        .envs(env)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_history_with_a_ready_token() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Tokens got outside the CLI: password logins over HTTP.
    let http = server.client();
    let alice_id = http.register("alice").await;
    http.register("bob").await;
    let alice = http.login("alice", "bot-1").await.token().to_owned();
    let bob = http.login("bob", "bot-2").await.token().to_owned();

    // --token, with no username or password at all.
    let s1 = tokenim(
        &server,
        h,
        &[],
        &[
            "send", "--token", &alice, "--device", "bot-1", "--to", "bob", "--json", "by", "flag",
        ],
        None,
    )
    .await
    .json();
    assert_eq!(s1["seq"], 1);
    let conv = s1["conv_id"].as_str().unwrap().to_owned();
    // TOKENIM_TOKEN; it wins over a wrong password given alongside.
    let env = [
        ("TOKENIM_TOKEN", alice.as_str()),
        ("TOKENIM_USER", "alice"),
        ("TOKENIM_PASSWORD", "wrong-pass"),
    ];
    let s2 = tokenim(
        &server,
        h,
        &env,
        &["send", "--conv", &conv, "--json", "by env"],
        None,
    )
    .await
    .json();
    assert_eq!(s2["seq"], 2);

    // History with bob's token, by flag and by environment.
    let by_flag = tokenim(
        &server,
        h,
        &[],
        &["history", "--token", &bob, "--with", "alice", "--json"],
        None,
    )
    .await
    .json();
    let by_env = tokenim(
        &server,
        h,
        &[("TOKENIM_TOKEN", bob.as_str())],
        &["history", "--conv", &conv, "--json"],
        None,
    )
    .await;
    assert!(!by_env.stdout.contains(&bob) && !by_env.stderr.contains(&bob));
    let by_env = by_env.json();
    for hist in [&by_flag, &by_env] {
        assert_eq!(hist["conv_id"], conv.as_str());
        let events = hist["events"].as_array().unwrap();
        let texts: Vec<&str> = events
            .iter()
            .map(|e| e["content"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["by flag", "by env"]);
        assert!(events.iter().all(|e| e["sender"] == alice_id.as_str()));
    }

    // A refused token fails with unauthorized and does not echo the token.
    let bad = "not-a-real-token-0123456789";
    let out = tokenim(
        &server,
        h,
        &[],
        &["history", "--token", bad, "--conv", &conv],
        None,
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("unauthorized"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(bad) && !out.stdout.contains(bad),
        "{}",
        out.stderr
    );
    // `login` would print a token: with one given, it refuses.
    let out = tokenim(
        &server,
        h,
        &[("TOKENIM_TOKEN", bob.as_str())],
        &["login"],
        None,
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(!out.stdout.contains(&bob) && !out.stderr.contains(&bob));
    // The help says the token wins, and hides the variable's value.
    let help = tokenim(
        &server,
        h,
        &[("TOKENIM_TOKEN", bob.as_str())],
        &["send", "--help"],
        None,
    )
    .await;
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(help.stdout.contains("TOKENIM_TOKEN"), "{}", help.stdout);
    assert!(
        help.stdout.contains("wins over a password"),
        "{}",
        help.stdout
    );
    assert!(!help.stdout.contains(&bob));
}
