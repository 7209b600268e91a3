//! Process and socket plumbing for the load generator: the file-descriptor
//! limit, loopback source addresses, TCP connects, the server's RSS and the
//! kernel's TCP memory, and the run's monotonic clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::net::{TcpSocket, TcpStream};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the run started: the timestamps the bench writes into
/// its messages and compares on receipt (one process, one clock).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns it.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Parses `127.0.0.1`, `127.0.0.1,127.0.0.2` or the range
/// `127.0.0.1-127.0.0.8`; only loopback addresses are accepted.
pub fn parse_sources(s: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.parse().with_context(|| format!("source address {a}"))?;
            let b: Ipv4Addr = b.parse().with_context(|| format!("source address {b}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_536 {
                bail!("bad source range {part}");
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("source address {part}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("no source address");
    }
    if let Some(bad) = out.iter().find(|a| !a.is_loopback()) {
        bail!("source address {bad} is not loopback: the bench only loads this machine");
    }
    Ok(out)
}

/// `http://HOST:PORT[/]` to a socket address and the Host header value.
pub async fn resolve_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("--url {url}: the raw client speaks plain http:// (ws://) only")
    })?;
    let host = rest.trim_end_matches('/').to_string();
    let addr = tokio::net::lookup_host(&host)
        .await
        .with_context(|| format!("resolving {host}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("{host} has no IPv4 address"))?;
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: the bench only loads this machine");
    }
    Ok((addr, host))
}

/// A TCP connection to `addr` from `src` (port chosen by the kernel), with
/// Nagle off.
pub async fn connect(addr: SocketAddr, src: IpAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if src != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// VmRSS of the processes added up (none: unknown), in bytes.
pub fn rss_total(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// VmRSS of a process in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The kernel's TCP buffer memory in bytes (the `mem` pages of
/// /proc/net/sockstat), for both ends of every loopback connection.
pub fn kernel_tcp_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            let pages: u64 = it.next()?.parse().ok()?;
            return Some(pages * 4096);
        }
    }
    None
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat
/// (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat are utime and stime; `rest` starts at field 3
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of every process whose name (`/proc/PID/comm`) is one of
/// `names`, by pid.
fn procs_cpu(names: &[String]) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if names.iter().any(|n| n == comm.trim())
            && let Some(t) = cpu_secs(&pid.to_string())
        {
            out.insert(pid, t);
        }
    }
    out
}

/// CPU seconds of the processes added up (none: unknown).
fn servers_cpu(pids: &[String]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_secs(p)).sum()
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
pub fn machine_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(busy as f64 / 100.0)
}

/// Where the CPU went during a measured phase: the server's, the bench's
/// own, and everything else on the machine (other people's builds), each
/// in percent of one core.
pub struct CpuProbe {
    server: Vec<String>,
    t: Instant,
    s0: Option<f64>,
    b0: Option<f64>,
    m0: Option<f64>,
    /// `--aux-procs`: the names, and each matching process's CPU seconds
    /// at the start.
    aux: Vec<String>,
    a0: std::collections::HashMap<u32, f64>,
}

impl CpuProbe {
    /// `server_pids`: the server's process, or every node of a cluster
    /// (their CPU is added up).
    pub fn start(server_pids: &[u32]) -> CpuProbe {
        let server: Vec<String> = server_pids.iter().map(|p| p.to_string()).collect();
        CpuProbe {
            s0: servers_cpu(&server),
            server,
            t: Instant::now(),
            b0: cpu_secs("self"),
            m0: machine_busy_secs(),
            aux: Vec::new(),
            a0: Default::default(),
        }
    }

    /// Also measures the processes named `names` (all of them, also those
    /// that start during the phase), reported as `aux_cpu_pct`.
    pub fn with_aux(mut self, names: &[String]) -> CpuProbe {
        self.aux = names.to_vec();
        self.a0 = procs_cpu(&self.aux);
        self
    }

    /// Adds server_cpu_pct, bench_cpu_pct and other_cpu_pct to `m`, and
    /// returns a summary line.
    pub fn finish(&self, m: &mut serde_json::Map<String, serde_json::Value>) -> String {
        let secs = self.t.elapsed().as_secs_f64().max(1e-9);
        let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some((b - a) / secs * 100.0),
            _ => None,
        };
        let s = d(self.s0, servers_cpu(&self.server));
        let b = d(self.b0, cpu_secs("self"));
        let all = d(self.m0, machine_busy_secs());
        let aux = (!self.aux.is_empty()).then(|| {
            let now = procs_cpu(&self.aux);
            let used: f64 = now
                .iter()
                .map(|(pid, t)| t - self.a0.get(pid).copied().unwrap_or(0.0))
                .map(|d| d.max(0.0))
                .sum();
            used / secs * 100.0
        });
        let other = match (all, s, b) {
            (Some(a), Some(s), Some(b)) => Some((a - s - b - aux.unwrap_or(0.0)).max(0.0)),
            _ => None,
        };
        let r = |x: Option<f64>| serde_json::json!(x.map(|v| v.round()));
        m.insert("server_cpu_pct".into(), r(s));
        m.insert("bench_cpu_pct".into(), r(b));
        m.insert("other_cpu_pct".into(), r(other));
        let f = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{v:.0}%"));
        let aux_part = match aux {
            Some(v) => {
                m.insert("aux_cpu_pct".into(), r(Some(v)));
                format!(", {} {}", self.aux.join("+"), f(Some(v)))
            }
            None => String::new(),
        };
        format!(
            "cpu (100% = one core, 2 cores here): server {}, bench {}{aux_part}, rest of the machine {}",
            f(s),
            f(b),
            f(other)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let v = parse_sources("127.0.0.1-127.0.0.3,127.0.1.1").unwrap();
        assert_eq!(v.len(), 4);
        assert!(parse_sources("10.0.0.1").is_err());
        assert!(parse_sources("").is_err());
    }
}
