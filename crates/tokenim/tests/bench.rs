//! `tokenim bench` end to end: each scenario runs at a tiny size against a
//! real `tokenim serve` child process (its own temp data dir and port), and
//! its last stdout line must be a JSON result showing nothing lost,
//! duplicated or out of order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tokenim");
const ADMIN: &str = "bench-test-admin";

/// A `tokenim serve` child, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Starts a server and returns once it logged that it listens.
fn server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--admin-token", ADMIN])
        .args(["--argon2-memory-kib", "8", "--argon2-iterations", "1"])
        .args([
            "--limit",
            "send_rate_per_sec=1000000",
            "--limit",
            "send_burst=1000000",
        ])
        .args([
            "--limit",
            "login_rate_per_min=10000000",
            "--limit",
            "login_burst=10000000",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tokenim serve");
    // the "listening" log line may go to stdout or stderr: watch both
    let (tx, rx) = mpsc::channel::<String>();
    for out in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut s = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("listening") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let status = s.child.try_wait();
                panic!("the server did not start ({status:?}); it said: {seen:#?}");
            }
        }
    }
    // and it answers
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        health.is_ok(),
        "the server logged listening but refuses connections"
    );
    let _ = &mut s;
    s
}

/// Runs `tokenim bench ARGS` against `s` and returns its JSON result.
fn bench(s: &Server, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args([
            "--url",
            &s.url,
            "--admin-token",
            ADMIN,
            "--quiet",
            "--timeout",
            "30",
        ])
        .args(["--server-pid", &s.child.id().to_string()])
        .output()
        .expect("running tokenim bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}\nstderr:\n{stderr}"));
    for k in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(v[k], 0, "{k} in {v}");
    }
    for k in ["p50_ms", "p99_ms"] {
        assert!(v[k].is_number(), "{k} missing in {v}");
    }
    v
}

#[test]
fn pairs_deliver_everything_once_in_order() {
    let s = server();
    let v = bench(
        &s,
        &[
            "pairs",
            "--pairs",
            "3",
            "--window",
            "4",
            "--messages",
            "300",
        ],
    );
    assert_eq!(v["acked"], 300, "{v}");
    assert_eq!(v["delivered"], 300, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["recv_p99_ms"].is_number(), "{v}");
    assert!(v["server_cpu_pct"].is_number(), "{v}");
}

#[test]
fn rate_sends_at_the_asked_rate() {
    let s = server();
    let v = bench(
        &s,
        &[
            "rate",
            "--pairs",
            "4",
            "--rate",
            "400",
            "--duration",
            "1",
            "--idle",
            "20",
        ],
    );
    assert_eq!(v["sent"], 400, "{v}");
    assert_eq!(v["acked"], 400, "{v}");
    assert_eq!(v["delivered"], 400, "{v}");
    assert_eq!(v["idle"], 20, "{v}");
    assert_eq!(v["idle_dropped"], 0, "{v}");
    // open loop: one second of sending at 400/s, whatever the latency
    let secs = v["secs"].as_f64().unwrap();
    assert!(secs >= 0.95, "{v}");
}

#[test]
fn conns_hold_connections_and_measure_memory() {
    let s = server();
    let v = bench(&s, &["conns", "-n", "200", "--hold", "0.2"]);
    assert_eq!(v["connections"], 200, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    assert!(v["server_rss_after"].as_u64().unwrap() > 0, "{v}");
    assert!(v["server_bytes_per_conn"].is_number(), "{v}");
}

#[test]
fn group_fans_out_to_every_online_member() {
    let s = server();
    let v = bench(
        &s,
        &[
            "group",
            "--groups",
            "2",
            "--members",
            "10",
            "--online",
            "0.5",
            "--senders",
            "2",
            "--messages",
            "40",
        ],
    );
    // 2 senders + half of the other 8 online per group; each message reaches
    // every online member but its sender's socket
    assert_eq!(v["online_per_group"], 6, "{v}");
    assert_eq!(v["acked"], 40, "{v}");
    assert_eq!(v["deliveries"], 40 * 5, "{v}");
    assert!(v["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn storm_clients_resync_what_they_missed() {
    let s = server();
    let v = bench(
        &s,
        &[
            "storm",
            "--clients",
            "60",
            "--missed",
            "7",
            "--group-size",
            "25",
        ],
    );
    assert_eq!(v["synced"], 60 * 7, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert!(v["all_caught_up_secs"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn plot_draws_results_as_svg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("runs.jsonl");
    std::fs::write(
        &input,
        "progress noise\n\
         {\"scenario\":\"rate\",\"msgs_per_sec\":1000,\"p50_ms\":1.0,\"p99_ms\":3.0}\n\
         {\"scenario\":\"rate\",\"msgs_per_sec\":5000,\"p50_ms\":2.0,\"p99_ms\":9.5}\n",
    )
    .expect("write input");
    let svg = dir.path().join("out.svg");
    let out = Command::new(BIN)
        .args([
            "bench",
            "plot",
            "--x",
            "msgs_per_sec",
            "--y",
            "p50_ms,p99_ms",
            "-o",
        ])
        .arg(&svg)
        .arg(&input)
        .output()
        .expect("running bench plot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(text.starts_with("<svg"), "{text}");
    assert_eq!(text.matches("<polyline").count(), 2, "{text}");
    assert_eq!(text.matches("<circle").count(), 4, "{text}");
}
