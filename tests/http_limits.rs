//! The HTTP origin under load and at its caps, against a real `strata serve` with a real ffmpeg
//! publisher, over loopback sockets:
//! - 2,000 idle connections and 500 event-stream subscribers held open while an hls.js-style
//!   poller of a live stream still gets every playlist and every segment they name;
//! - a subscriber over its address's cap gets 429, over the server's cap 503 (both with
//!   `Retry-After`), refusals are logged at a bounded rate, and slots come back when
//!   subscribers leave;
//! - silent and idle kept-alive connections are closed after the configured timeouts, and past
//!   `http.max_connections` a client waits until a connection closes;
//! - a viewer on a slow link is not queued a backlog by the kernel (`ss` reads the server's
//!   socket), unlike on a server without pacing, and a fast viewer beside it is unaffected.
//!
//! Subscribers come from several loopback addresses (127.0.0.2, 127.0.0.3, …: Linux lets a
//! socket bind any 127.0.0.0/8 address) so that per-address caps can be filled one by one.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{publish, wait_for, Server};

/// Idle connections held during the load phase.
const IDLE: usize = 2_000;
/// Event streams held during the load phase: `ADDRESSES` addresses × `PER_ADDRESS`.
const SUBSCRIBERS: usize = ADDRESSES as usize * PER_ADDRESS;
const ADDRESSES: u8 = 20;
const PER_ADDRESS: usize = 25;
/// The server's cap: room for 20 more than the load phase holds.
const MAX_SUBSCRIBERS: usize = SUBSCRIBERS + 20;
/// How long the poller plays the live stream while everything is held.
const POLL_FOR: Duration = Duration::from_secs(15);
/// Every wait on the server has this deadline (a loaded 2-core machine is slow, not stuck).
const DEADLINE: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The `n`th subscriber address of the load phase: 127.0.0.2, 127.0.0.3, …
fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + n)
}

fn server_addr(server: &Server) -> SocketAddr {
    server.http.parse().expect("the server's HTTP address")
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .unwrap_or_else(|e| panic!("binding {from}: {e}"));
    socket
        .connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting {from} → {to}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// A response head read off a raw connection.
struct Head {
    status: u16,
    headers: HashMap<String, String>,
}

/// Reads up to the end of a response head (what follows it stays unread or is dropped).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// Sends `GET path` (keep-alive) and reads the answer's head.
fn request(stream: &mut TcpStream, host: SocketAddr, path: &str, token: Option<&str>) -> Head {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let text = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{auth}\r\n");
    stream
        .write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("sending GET {path}: {e}"));
    read_head(stream).unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"))
}

/// Which event stream a subscriber opens.
#[derive(Debug, Clone, Copy)]
enum Events {
    Public,
    Admin,
}

/// Opens an event stream from `from`: the answer's head and the connection, held open.
fn subscribe(server: &Server, from: Ipv4Addr, which: Events) -> (Head, TcpStream) {
    let addr = server_addr(server);
    let mut stream = connect_from(from, addr);
    let head = match which {
        Events::Public => request(&mut stream, addr, "/api/public/events", None),
        Events::Admin => request(
            &mut stream,
            addr,
            "/api/v1/events",
            Some(&server.admin_token),
        ),
    };
    (head, stream)
}

/// Whether the server still holds `stream` open (it has not closed or reset it).
fn is_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let open = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    open
}

/// The test itself holds thousands of sockets.
fn raise_open_file_limit(needed: u64) {
    let raised = strata::open_files::raise_to_hard_limit().expect("raising RLIMIT_NOFILE");
    assert!(
        raised.to >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        raised.to
    );
}

/// What an hls.js-style poller saw.
#[derive(Default)]
struct Played {
    playlists: usize,
    /// (media playlist, media sequence number) of every segment fetched.
    segments: BTreeSet<(String, u64)>,
    failures: Vec<String>,
    slowest: Duration,
}

/// Plays the live stream at `live` for `duration` like hls.js: the multivariant playlist once,
/// then every media playlist (video and audio) every second, and every init segment and
/// segment each one names, once.
fn play(server: &Server, live: &str, duration: Duration) -> Played {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(IO_TIMEOUT))
        .build()
        .into();
    let mut played = Played::default();
    let get = |played: &mut Played, path: &str| -> Option<Vec<u8>> {
        let started = Instant::now();
        let result = agent.get(&server.url(path)).call();
        let answer = match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = response.body_mut().read_to_vec();
                match (status, body) {
                    (200, Ok(body)) if !body.is_empty() => Some(body),
                    (status, body) => {
                        played.failures.push(format!(
                            "{path}: status {status}, body {:?}",
                            body.map(|b| b.len())
                        ));
                        None
                    }
                }
            }
            Err(e) => {
                played.failures.push(format!("{path}: {e}"));
                None
            }
        };
        played.slowest = played.slowest.max(started.elapsed());
        answer
    };
    let master = get(&mut played, &format!("{live}/master.m3u8")).expect("the master playlist");
    let master = m3u8_rs::parse_master_playlist_res(&master).expect("the master playlist parses");
    let media: Vec<String> = master
        .variants
        .iter()
        .map(|v| v.uri.clone())
        .chain(master.alternatives.iter().filter_map(|a| a.uri.clone()))
        .collect();
    assert!(
        !media.is_empty(),
        "the master playlist names media playlists"
    );
    let mut inits = BTreeSet::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let round = Instant::now();
        for uri in &media {
            let rendition = uri.rsplit_once('/').map_or("", |(dir, _)| dir);
            let base = format!("{live}/{rendition}");
            let Some(text) = get(&mut played, &format!("{live}/{uri}")) else {
                continue;
            };
            played.playlists += 1;
            let playlist = match m3u8_rs::parse_media_playlist_res(&text) {
                Ok(p) => p,
                Err(e) => {
                    played.failures.push(format!("{uri} does not parse: {e}"));
                    continue;
                }
            };
            for (i, segment) in playlist.segments.iter().enumerate() {
                if let Some(map) = &segment.map {
                    if inits.insert(format!("{base}/{}", map.uri)) {
                        get(&mut played, &format!("{base}/{}", map.uri));
                    }
                }
                let number = playlist.media_sequence + i as u64;
                if !played.segments.contains(&(uri.clone(), number))
                    && get(&mut played, &format!("{base}/{}", segment.uri)).is_some()
                {
                    played.segments.insert((uri.clone(), number));
                }
            }
        }
        // hls.js reloads a live playlist about every half target duration when it is unchanged
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
    }
    played
}

#[test]
fn live_playback_holds_up_under_thousands_of_idle_connections_and_subscribers_and_the_caps_hold() {
    raise_open_file_limit((IDLE + MAX_SUBSCRIBERS + 200) as u64);
    let max_subscribers = MAX_SUBSCRIBERS.to_string();
    let per_address = PER_ADDRESS.to_string();
    let server = Server::start_with_env(
        &[
            ("STRATA__HTTP__MAX_EVENT_SUBSCRIBERS", &max_subscribers),
            ("STRATA__HTTP__MAX_EVENT_SUBSCRIBERS_PER_IP", &per_address),
            // the idle connections must outlive the test (the timeouts have their own test)
            ("STRATA__HTTP__REQUEST_TIMEOUT", "300"),
            ("STRATA__HTTP__KEEP_ALIVE", "300"),
        ],
        |_| {},
    );
    assert!(
        server.log().contains("open-file limit"),
        "the server logs its open-file limit:\n{}",
        server.log()
    );
    let stream = server.create_stream("load", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 120);
    let first = wait_for(DEADLINE, || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| support::last_segment_number(p).is_some())
    });
    assert!(first.is_some(), "the stream went live:\n{}", server.log());
    let addr = server_addr(&server);

    // 2,000 idle connections: half never send a byte, half made one request and stay kept-alive.
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut conn = connect_from(Ipv4Addr::LOCALHOST, addr);
        if i % 2 == 1 {
            let head = request(&mut conn, addr, "/healthz", None);
            assert_eq!(head.status, 200, "idle connection {i}'s request");
        }
        idle.push(conn);
    }

    // 500 event streams from 20 addresses, one in ten on the admin stream.
    let mut subscribers: Vec<(Ipv4Addr, TcpStream)> = Vec::with_capacity(MAX_SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let from = loopback((i % ADDRESSES as usize) as u8);
        let which = if i % 10 == 0 {
            Events::Admin
        } else {
            Events::Public
        };
        let (head, conn) = subscribe(&server, from, which);
        assert_eq!(head.status, 200, "subscriber {i} ({which:?} from {from})");
        assert_eq!(
            head.headers.get("content-type").map(String::as_str),
            Some("text/event-stream")
        );
        subscribers.push((from, conn));
    }

    let played = play(&server, &live, POLL_FOR);
    eprintln!(
        "poller: {} playlists, {} segments, slowest answer {:?}",
        played.playlists,
        played.segments.len(),
        played.slowest
    );
    assert!(
        played.failures.is_empty(),
        "the poller got every playlist and segment ({} playlists, {} segments); failures: {:#?}",
        played.playlists,
        played.segments.len(),
        played.failures
    );
    let per_playlist = |uri: &str| played.segments.iter().filter(|(u, _)| u == uri).count();
    assert!(
        per_playlist("source/index.m3u8") >= 4,
        "the live stream advanced while polled: {:?} (slowest answer {:?})",
        played.segments,
        played.slowest
    );
    let closed_idle = idle.iter().filter(|c| !is_open(c)).count();
    let closed_subscribers = subscribers.iter().filter(|(_, c)| !is_open(c)).count();
    assert_eq!(
        (closed_idle, closed_subscribers),
        (0, 0),
        "every idle connection and event stream was held for the whole time"
    );

    // One address over its cap: 429 on both event streams, with Retry-After.
    for which in [Events::Public, Events::Admin] {
        let (head, _) = subscribe(&server, loopback(0), which);
        assert_eq!(head.status, 429, "{which:?} over the per-address cap");
        assert!(head.headers.contains_key("retry-after"), "429 says when");
    }
    // The server over its cap: fill it from a new address, then 503 for everyone else.
    let filler = Ipv4Addr::new(127, 0, 0, 100);
    for _ in SUBSCRIBERS..MAX_SUBSCRIBERS {
        let (head, conn) = subscribe(&server, filler, Events::Public);
        assert_eq!(head.status, 200, "room for {MAX_SUBSCRIBERS}");
        subscribers.push((filler, conn));
    }
    let newcomer = Ipv4Addr::new(127, 0, 0, 101);
    for which in [Events::Public, Events::Admin] {
        let (head, _) = subscribe(&server, newcomer, which);
        assert_eq!(head.status, 503, "{which:?} over the server's cap");
        assert!(head.headers.contains_key("retry-after"), "503 says when");
    }

    // A burst of refusals is logged at a bounded rate.
    let warnings = |log: &str| log.matches("event-stream subscriber refused").count();
    let before = warnings(&server.log());
    let burst = Instant::now();
    for _ in 0..30 {
        let (head, _) = subscribe(&server, newcomer, Events::Public);
        assert_eq!(head.status, 503);
    }
    let allowed = 2 + (burst.elapsed().as_secs() / 5) as usize;
    let logged = warnings(&server.log()) - before;
    assert!(
        logged <= allowed,
        "30 refusals in {:?} logged {logged} warnings (at most {allowed})",
        burst.elapsed()
    );
    assert!(warnings(&server.log()) >= 1, "refusals are logged");

    // Subscribers leave: their slots come back, for the server and for their address. They
    // close their side (FIN) as a browser closing an EventSource does; the sockets stay
    // readable, so only the server noticing the close gives the slots back, not a failed write.
    let leaving = loopback(0);
    let (gone, staying): (Vec<_>, Vec<_>) = subscribers
        .into_iter()
        .partition(|(from, _)| *from == leaving);
    subscribers = staying;
    for (_, conn) in &gone {
        conn.shutdown(Shutdown::Write)
            .expect("close the sending side");
    }
    let left = Instant::now();
    let back = wait_for(DEADLINE, || {
        let (head, conn) = subscribe(&server, newcomer, Events::Public);
        (head.status == 200).then_some(conn)
    });
    assert!(back.is_some(), "a slot came back after subscribers left");
    eprintln!(
        "a slot came back {:?} after subscribers left",
        left.elapsed()
    );
    let (head, _again) = subscribe(&server, leaving, Events::Admin);
    assert_eq!(
        head.status, 200,
        "the address that left may subscribe again"
    );

    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    drop(idle);
    drop(subscribers);
    drop(gone);
    let mut server = server;
    assert!(server.is_running(), "the server is still up");
}

#[test]
fn silent_and_idle_connections_are_closed_and_past_the_cap_clients_wait() {
    let server = Server::start_with_env(
        &[
            ("STRATA__HTTP__REQUEST_TIMEOUT", "1"),
            ("STRATA__HTTP__KEEP_ALIVE", "1"),
            ("STRATA__HTTP__MAX_CONNECTIONS", "4"),
        ],
        |_| {},
    );
    let addr = server_addr(&server);
    // actix's defaults (5 s for both) would keep these open past the deadline
    let closes_within = Duration::from_secs(4);

    // A client that connects and says nothing is answered 408 and closed.
    let started = Instant::now();
    let mut silent = connect_from(Ipv4Addr::LOCALHOST, addr);
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(
        started.elapsed() < closes_within,
        "a silent connection was closed after {:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );

    // A kept-alive connection is closed once idle for the keep-alive time.
    let mut kept = connect_from(Ipv4Addr::LOCALHOST, addr);
    let head = request(&mut kept, addr, "/healthz", None);
    assert_eq!(head.status, 200);
    let idle_since = Instant::now();
    let _ = kept.read_to_end(&mut Vec::new());
    assert!(
        idle_since.elapsed() < closes_within,
        "an idle kept-alive connection was closed after {:?}",
        idle_since.elapsed()
    );

    // Four event streams hold every connection the server allows; a fifth client waits.
    let mut holders: Vec<TcpStream> = (0..4)
        .map(|i| {
            let (head, conn) = subscribe(&server, Ipv4Addr::LOCALHOST, Events::Public);
            assert_eq!(head.status, 200, "holder {i}");
            conn
        })
        .collect();
    let mut waiting = connect_from(Ipv4Addr::LOCALHOST, addr);
    waiting
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("send");
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match waiting.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("past http.max_connections a client is not served yet: {other:?}"),
    }
    // One holder leaves: the waiting client is served.
    holders.pop();
    waiting.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let head = read_head(&mut waiting).expect("the waiting client is answered");
    assert_eq!(head.status, 200, "served once a connection closed");
    drop(holders);
}

/// The largest file the web app ships (a player bundle, hundreds of kB).
fn largest_asset() -> (String, Vec<u8>) {
    let assets = support::web_root().join("assets");
    let largest = std::fs::read_dir(&assets)
        .expect("web/dist/assets (make web)")
        .filter_map(|e| e.ok())
        .max_by_key(|e| e.metadata().map_or(0, |m| m.len()))
        .expect("an asset");
    let name = largest.file_name().to_string_lossy().into_owned();
    let bytes = std::fs::read(largest.path()).expect("read the asset");
    (format!("/assets/{name}"), bytes)
}

/// What `ss` says of the server's side of the connection from `client` port, in any state
/// (a server that has written its whole response and closed is in FIN-WAIT with its bytes
/// still queued): the bytes the kernel holds for it (`Send-Q`: unsent and unacknowledged)
/// and the socket's send buffer (`skmem` `tb`), once the server has started answering.
fn server_side_queue(server_port: u16, client_port: u16) -> Option<(u64, u64)> {
    let filter = format!("( sport = :{server_port} and dport = :{client_port} )");
    let out = std::process::Command::new("ss")
        .args(["-tnmiH", &filter])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("bytes_sent:") {
        // not answering yet: the server may not even have accepted it (its options unset)
        return None;
    }
    // State Recv-Q Send-Q Local Peer
    let queued = text.split_whitespace().nth(2)?.parse().ok()?;
    let at = text.find(",tb")? + 3;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((queued, digits.parse().ok()?))
}

/// A viewer on a slow link (a 4 kB receive window, read 4 kB every 20 ms: about 200 kB/s)
/// fetching a large object while a fast viewer fetches the same object: the most the kernel
/// held for the slow one at any time, and its send buffer (from `ss`). Both viewers
/// receive the whole object unchanged, and the fast one within a few seconds.
fn throttled_viewer_backlog(server: &Server, path: &str, expected: &[u8]) -> (u64, u64) {
    use socket2::{Domain, Socket, Type};
    let addr = server_addr(server);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let client_port = stream.local_addr().expect("local address").port();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let fast_url = server.url(path);
    let fast = std::thread::spawn(move || {
        let started = Instant::now();
        let (status, body) = support::get_url(&fast_url);
        (status, body, started.elapsed())
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let (mut most_queued, mut send_buffer) = (0, 0);
    let mut sampled = Instant::now() - Duration::from_secs(1);
    loop {
        if sampled.elapsed() >= Duration::from_millis(100) {
            if let Some((queued, buffer)) = server_side_queue(addr.port(), client_port) {
                most_queued = most_queued.max(queued);
                send_buffer = send_buffer.max(buffer);
            }
            sampled = Instant::now();
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the slow viewer's read failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let at = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(
        received[at + 4..] == *expected,
        "the slow viewer receives the whole object, unchanged"
    );
    let (status, body, took) = fast.join().expect("the fast viewer");
    assert_eq!(status, 200);
    assert!(body == expected, "the fast viewer receives the object");
    assert!(
        took < Duration::from_secs(5),
        "the fast viewer took {took:?} beside the slow one"
    );
    (most_queued, send_buffer)
}

#[test]
fn a_throttled_viewer_is_not_queued_a_backlog_and_a_fast_one_is_unaffected() {
    let (path, bytes) = largest_asset();
    assert!(bytes.len() > 300_000, "{path}: {} bytes", bytes.len());
    let lowat = 4096;
    let paced = Server::start_with_env(&[("STRATA__HTTP__NOTSENT_LOWAT", "4096")], |_| {});
    let (queued, send_buffer) = throttled_viewer_backlog(&paced, &path, &bytes);
    // TCP_NOTSENT_LOWAT: the kernel takes no more once that much waits unsent; in flight on
    // top of it is what the viewer's 4 kB window lets out (slack: 32 kB). Nothing queued at
    // all would mean the viewer was not slow, and this proved nothing.
    assert!(
        queued > 0 && queued <= lowat + 32 * 1024,
        "{queued} bytes queued in the kernel for a throttled viewer (TCP_NOTSENT_LOWAT {lowat})"
    );
    // SO_SNDBUF 512 kB (the kernel doubles what it is set to)
    assert!(
        send_buffer > 0 && send_buffer <= 2 * 524_288,
        "send buffer {send_buffer}\n{}",
        paced.log()
    );
    // the same viewers of a server without pacing: the kernel takes most of the object
    let unpaced = Server::start_with_env(
        &[
            ("STRATA__HTTP__SEND_BUFFER", "0"),
            ("STRATA__HTTP__NOTSENT_LOWAT", "0"),
        ],
        |_| {},
    );
    let (unpaced_queued, unpaced_buffer) = throttled_viewer_backlog(&unpaced, &path, &bytes);
    println!(
        "most queued in the kernel for the throttled viewer: paced {queued} B (send buffer \
         {send_buffer} B), unpaced {unpaced_queued} B (send buffer {unpaced_buffer} B)"
    );
    assert!(
        unpaced_queued > bytes.len() as u64 / 2,
        "without pacing the kernel queues most of the object ({unpaced_queued} B)"
    );
}
