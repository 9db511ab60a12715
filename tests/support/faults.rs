//! A fault-injecting HTTP/1.1 proxy for the storage tests: in front of the S3 server, it answers
//! `503 SlowDown` to a share of requests and delays the others, one request per connection
//! (`Connection: close` both ways). It records every request line, so a test can check what
//! crossed the wire (no stream key in any object URL).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Share of requests answered 503 (0.0–1.0).
    pub fail_ratio: f64,
    /// Upper bound of the random delay added to every forwarded request.
    pub max_delay: Duration,
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub failed: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
    pub request_lines: Arc<Mutex<Vec<String>>>,
    /// The request lines refused because `down` was set.
    pub refused_while_down: Arc<Mutex<Vec<String>>>,
    /// While set, every request fails (a full outage).
    pub down: Arc<AtomicBool>,
    /// While set, requests pass untouched.
    pub calm: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = upstream
            .strip_prefix("http://")
            .expect("plain HTTP upstream")
            .to_string();
        let proxy = Self {
            endpoint,
            failed: Arc::default(),
            forwarded: Arc::default(),
            request_lines: Arc::default(),
            refused_while_down: Arc::default(),
            down: Arc::default(),
            calm: Arc::default(),
        };
        let shared = Shared {
            failed: proxy.failed.clone(),
            forwarded: proxy.forwarded.clone(),
            lines: proxy.request_lines.clone(),
            refused_while_down: proxy.refused_while_down.clone(),
            down: proxy.down.clone(),
            calm: proxy.calm.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, faults, &shared);
                });
            }
        });
        proxy
    }
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>";

/// The proxy's counters and switches, shared with its connection threads.
#[derive(Clone)]
struct Shared {
    failed: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
    lines: Arc<Mutex<Vec<String>>>,
    refused_while_down: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    calm: Arc<AtomicBool>,
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    faults: Faults,
    shared: &Shared,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed an idle connection
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let down = shared.down.load(Ordering::Relaxed);
    if down {
        if let Ok(mut l) = shared.refused_while_down.lock() {
            l.push(request_line.clone());
        }
    }
    if let Ok(mut l) = shared.lines.lock() {
        l.push(request_line);
    }
    let mut rng = rand::rng();
    let calm = shared.calm.load(Ordering::Relaxed);
    if down || (!calm && rng.random_bool(faults.fail_ratio)) {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{SLOW_DOWN}",
            SLOW_DOWN.len()
        );
        return client.write_all(response.as_bytes());
    }
    if !calm {
        let delay = rng.random_range(0..=faults.max_delay.as_millis() as u64);
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    client.write_all(&response)
}
