//! Many viewers polling one live stream: `VIEWERS` keep-alive connections to `ORIGIN`
//! (`host:port`), each asking for `PLAYLIST` (a live media playlist path) once a second and
//! for every segment it newly lists, for `SECONDS` after all have connected. Prints how many
//! requests were made and answered, the latency percentiles of the answers, and the peak
//! resident memory of the server process `SERVER_PID`.
//!
//! Run by `benches/viewers.sh`, which starts Strata and a publisher. The HTTP/1.1 client is a
//! minimal one written here (a request line, `Content-Length` bodies) because it only ever
//! talks to Strata, and a general client's pool per viewer would measure the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// Microseconds of every answer.
    latencies: Mutex<Vec<u32>>,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One GET on a kept-alive connection: the status and the body.
async fn get(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok((status, body))
}

/// The newest segment a media playlist lists (`{n}.m4s`).
fn newest_segment(playlist: &[u8]) -> Option<String> {
    String::from_utf8_lossy(playlist)
        .lines()
        .rev()
        .find(|l| {
            l.strip_suffix(".m4s")
                .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

async fn viewer(
    origin: String,
    playlist: String,
    start: Instant,
    until: Instant,
    tally: Arc<Tally>,
) {
    tokio::time::sleep_until(start.into()).await;
    let Ok(stream) = TcpStream::connect(&origin).await else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut conn = BufReader::new(stream);
    let dir = playlist.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut latencies = Vec::new();
    while Instant::now() < until {
        tick.tick().await;
        let mut wanted = vec![playlist.clone()];
        let mut i = 0;
        while i < wanted.len() {
            let path = wanted[i].clone();
            i += 1;
            tally.sent.fetch_add(1, Ordering::Relaxed);
            let asked = Instant::now();
            match get(&mut conn, &origin, &path).await {
                Ok((200, body)) => {
                    latencies.push(asked.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                    tally.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    if path == playlist {
                        let newest = newest_segment(&body);
                        if newest.is_some() && newest != last {
                            wanted.push(format!("{dir}/{}", newest.clone().unwrap_or_default()));
                            last = newest;
                        }
                    }
                }
                Ok((status, _)) => {
                    eprintln!("{path}: {status}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("{path}: {e}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(tally) = tally.latencies.lock().as_mut() {
                        tally.extend_from_slice(&latencies);
                    }
                    return;
                }
            }
        }
    }
    if let Ok(tally) = tally.latencies.lock().as_mut() {
        tally.extend_from_slice(&latencies);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    let viewers: usize = env("VIEWERS", 10_000);
    let seconds: u64 = env("SECONDS", 30);
    let origin: String = env("ORIGIN", String::new());
    let playlist: String = env("PLAYLIST", String::new());
    let server_pid: u32 = env("SERVER_PID", 0);
    if origin.is_empty() || playlist.is_empty() {
        // `cargo test --benches` runs this with nothing to measure
        assert_eq!(
            newest_segment(
                b"#EXTINF:2.0,\n4.m4s\n#EXT-X-PART:URI=\"5.0.m4s\"\n#EXTINF:2.0,\n5.m4s\n"
            ),
            Some("5.m4s".into())
        );
        println!(
            "ORIGIN and PLAYLIST are not set: nothing to measure (benches/viewers.sh sets them)"
        );
        return;
    }
    raise_open_files(viewers as u64 + 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let tally = Arc::new(Tally::default());
    // viewers join over a few seconds (the listen backlog is not a stampede test), then all
    // poll together for `seconds`
    let ramp = Duration::from_secs(5);
    let began = Instant::now();
    let until = began + ramp + Duration::from_secs(seconds);
    let rss_before = rss_kib(server_pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    runtime.block_on(async {
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(server_pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..viewers)
            .map(|i| {
                let start = began + ramp.mul_f64(i as f64 / viewers as f64);
                tokio::spawn(viewer(
                    origin.clone(),
                    playlist.clone(),
                    start,
                    until,
                    tally.clone(),
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        sampler.abort();
    });
    let mut latencies = tally
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let sent = tally.sent.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    println!("viewers:            {viewers} (kept-alive connections, one playlist a second each)");
    println!(
        "requests:           {sent} sent, {answered} answered 200, {} failed",
        tally.failed.load(Ordering::Relaxed)
    );
    println!(
        "answered all:       {}",
        if answered == sent { "yes" } else { "no" }
    );
    println!(
        "bytes received:     {:.1} MB",
        tally.bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    println!(
        "latency ms:         p50 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "server memory:      {:.0} MiB before, {:.0} MiB peak ({:.1} KiB per viewer)",
        rss_before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64 / viewers as f64
    );
    if answered != sent {
        std::process::exit(1);
    }
}
