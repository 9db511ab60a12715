//! Shared helpers for integration tests: a real `strata serve` process on ports chosen by the
//! OS, the real ffmpeg CLI as publisher, HTTP via ureq, ffprobe for checking media.

#![allow(dead_code)]

pub mod enhanced_rtmp;
pub mod faults;
pub mod previews;
pub mod rtmp_client;
pub mod s3;
pub mod ws_publisher;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub rtmp: String,
    pub http: String,
    /// The RTMPS listener's address, when the server was started with a certificate.
    pub rtmps: Option<String>,
    /// The SRT listener's address (UDP), unless SRT was turned off.
    pub srt: Option<String>,
    /// The devices' RTP port (UDP), unless devices were turned off.
    pub rtp: Option<String>,
    /// The admin token printed at first start.
    pub admin_token: String,
    /// Extra environment (settings) the server and its CLI runs share.
    env: Vec<(String, String)>,
    /// The PostgreSQL database the server uses, dropped after it.
    database: Option<PostgresDatabase>,
}

/// Which database a test server keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// A file in the server's data directory (the default).
    Sqlite,
    /// A fresh database on the PostgreSQL server `make test` starts (`STRATA_TEST_POSTGRES`).
    Postgres,
}

/// Where `make postgres` lets tests create databases.
const DEFAULT_POSTGRES: &str = "postgres://strata:strata@127.0.0.1:5432/postgres";

/// A database created for test servers; dropped with the last one that holds it.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    /// Creates an empty database. Panics (the test fails, never skips) when PostgreSQL is not
    /// reachable.
    pub fn create() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let admin_url =
            std::env::var("STRATA_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let name = format!(
            "strata_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let database = Self { admin_url, name };
        database.psql(&format!("DROP DATABASE IF EXISTS {}", database.name));
        database.psql(&format!("CREATE DATABASE {}", database.name));
        database
    }

    pub fn url(&self) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{}", self.name),
            None => panic!("STRATA_TEST_POSTGRES has no database part"),
        }
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args([&self.admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("psql (package postgresql-client) runs");
        assert!(
            out.status.success(),
            "PostgreSQL at STRATA_TEST_POSTGRES / {DEFAULT_POSTGRES} refused `{sql}` (`make \
             postgres` starts it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([&self.admin_url, "-qAtc", &sql])
            .output();
    }
}

/// The secret every node of a test cluster shares.
pub const CLUSTER_SECRET: &str = "a-cluster-secret-shared-by-every-node-0123456789";

/// Two nodes of one cluster: one PostgreSQL database and one media directory (local storage
/// both nodes read and write). Fields drop in order: the servers before their database.
pub struct TwoNodes {
    pub owner: Server,
    pub other: Server,
    pub shared: tempfile::TempDir,
    _database: PostgresDatabase,
}

impl TwoNodes {
    pub fn start() -> Self {
        let database = PostgresDatabase::create();
        let shared = tempfile::tempdir().expect("a shared media directory");
        let url = database.url();
        let storage = format!("file://{}", shared.path().display());
        let env = [
            ("STRATA__DATABASE__URL", url.as_str()),
            ("STRATA__AUTH__SECRET", CLUSTER_SECRET),
            ("STRATA__STORAGE__URL", storage.as_str()),
        ];
        Self {
            owner: Server::start_with_env(&env, |_| {}),
            other: Server::start_with_env(&env, |_| {}),
            shared,
            _database: database,
        }
    }
}

pub struct StreamInfo {
    pub key: String,
    pub playback_id: String,
}

/// The web app `make test` builds before the Rust tests run.
pub fn web_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist")
}

/// What `strata serve` printed when it was ready.
struct Ready {
    rtmp: String,
    http: String,
    rtmps: Option<String>,
    srt: Option<String>,
    rtp: Option<String>,
    /// Empty when it printed none.
    admin_token: String,
}

/// Starts `strata serve` in `dir` and waits for its ready line.
fn spawn(dir: &Path, env: &[(String, String)]) -> (Child, Ready) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = strata(dir, env)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn strata");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut admin_token = String::new();
    let ready = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("strata exited before it was ready:\n{log}")
            })
            .expect("read stdout");
        if let Some(rest) = line.trim().strip_prefix("Admin token: ") {
            admin_token = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if let Some(rest) = line.strip_prefix("STRATA_READY ") {
            break rest.to_string();
        }
    };
    // keep draining stdout so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let ready = Ready {
        rtmp: field("rtmp").expect("ready line: rtmp"),
        http: field("http").expect("ready line: http"),
        rtmps: field("rtmps"),
        srt: field("srt"),
        rtp: field("rtp"),
        admin_token,
    };
    (child, ready)
}

fn strata(dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.current_dir(dir)
        .env("STRATA__DATA_DIR", dir.join("data"))
        .env("STRATA__RTMP__LISTEN", "127.0.0.1:0")
        .env("STRATA__SRT__LISTEN", "127.0.0.1:0")
        .env("STRATA__DEVICES__RTP_LISTEN", "127.0.0.1:0")
        .env("STRATA__HTTP__LISTEN", "127.0.0.1:0")
        .env("STRATA__HTTP__WEB_ROOT", web_root())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts the server after `prepare` has written files into its working directory (e.g.
    /// `ladders/*.toml`).
    pub fn start_with(prepare: impl FnOnce(&Path)) -> Self {
        Self::start_with_env(&[], prepare)
    }

    /// Starts the server on `database` with extra settings in its environment.
    pub fn start_on(database: Database, env: &[(&str, &str)]) -> Self {
        let Database::Postgres = database else {
            return Self::start_with_env(env, |_| {});
        };
        let database = PostgresDatabase::create();
        let url = database.url();
        let mut env = env.to_vec();
        env.push(("STRATA__DATABASE__URL", &url));
        let mut server = Self::start_with_env(&env, |_| {});
        server.database = Some(database);
        server
    }

    /// Starts the server with extra settings in its environment (`STRATA__…`), after `prepare`.
    pub fn start_with_env(env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        let (child, ready) = spawn(dir.path(), &env);
        Self {
            rtmp: ready.rtmp,
            http: ready.http,
            rtmps: ready.rtmps,
            srt: ready.srt,
            rtp: ready.rtp,
            admin_token: ready.admin_token,
            child,
            dir,
            env,
            database: None,
        }
    }

    /// Asks the process to shut down (SIGTERM) and waits up to 30 s for it: its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM");
        wait_for(Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// Kills the process without letting it finish anything (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same data directory and settings (new ports).
    pub fn restart(&mut self) {
        self.kill();
        let (child, ready) = spawn(self.dir.path(), &self.env);
        (
            self.child, self.rtmp, self.http, self.rtmps, self.srt, self.rtp,
        ) = (
            child,
            ready.rtmp,
            ready.http,
            ready.rtmps,
            ready.srt,
            ready.rtp,
        );
    }

    /// Creates `name` with `ladder` (`passthrough`, `default`, `low-cpu`).
    pub fn create_stream(&self, name: &str, ladder: &str) -> StreamInfo {
        let out = strata(self.dir.path(), &self.env)
            .args(["stream", "create", name, "--ladder", ladder, "--json"])
            .output()
            .expect("run strata stream create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        for field in [
            "name",
            "key",
            "playback_id",
            "rtmp_url",
            "hls_url",
            "dash_url",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        StreamInfo {
            key: v["key"].as_str().unwrap_or_default().to_string(),
            playback_id: v["playback_id"].as_str().unwrap_or_default().to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.http, path.trim_start_matches('/'))
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    /// An ffmpeg SRT output URL publishing to `key` (access-control stream id).
    pub fn srt_url(&self, key: &str) -> String {
        let srt = self.srt.as_deref().expect("the server has SRT on");
        format!("srt://{srt}?streamid=#!::r=live/{key},m=publish")
    }

    /// Status and body; never panics on HTTP errors.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        get_url(&self.url(path))
    }

    pub fn get_text(&self, path: &str) -> Option<String> {
        let (status, body) = self.get(path);
        (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// The server's resident memory now, bytes.
    pub fn rss(&self) -> u64 {
        self.memory("VmRSS:")
    }

    /// The most resident memory the server has had so far, bytes.
    pub fn peak_rss(&self) -> u64 {
        self.memory("VmHWM:")
    }

    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn media_dir(&self) -> PathBuf {
        self.dir.path().join("data/media")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An API request: `method` on `path` with an optional bearer token and JSON body; status and
/// body.
pub fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(server.url(path));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let result = match body {
        Some(json) => agent.run(
            request
                .header("Content-Type", "application/json")
                .body(json.to_string())
                .expect("request"),
        ),
        None => agent.run(request.body(()).expect("request")),
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap_or_default())
        }
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

pub fn get_url(url: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = get_url_with_headers(url, &[]);
    (status, body)
}

/// GET `url`: status, the values of the named headers, and the body (status 0 when the server
/// does not answer).
pub fn get_url_with_headers(url: &str, names: &[&str]) -> (u16, Vec<Option<String>>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut resp) => {
            let headers = names
                .iter()
                .map(|n| {
                    resp.headers()
                        .get(*n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .collect();
            let body = resp.body_mut().read_to_vec().unwrap_or_default();
            (resp.status().as_u16(), headers, body)
        }
        Err(_) => (0, vec![None; names.len()], Vec::new()),
    }
}

/// Publishes `seconds` of 640x360 testsrc2 + sine in real time: H.264 with B-frames, 2 s
/// GOPs, AAC.
pub fn publish(url: &str, seconds: u32) -> Child {
    publish_sized(url, seconds, "640x360")
}

/// `publish` with another picture size (`WIDTHxHEIGHT`).
pub fn publish_sized(url: &str, seconds: u32, size: &str) -> Child {
    publish_as(url, seconds, size, "flv")
}

/// `publish_sized` in container `format`: `flv` (RTMP, RTMPS) or `mpegts` (SRT).
pub fn publish_as(url: &str, seconds: u32, size: &str, format: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(test_signal(seconds, size))
        .args(["-f", format, url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg (is it installed? `make test` installs it)")
}

/// What `publish_sized` sends, written to an FLV file instead.
pub fn encode_flv(path: &Path, seconds: u32, size: &str) {
    let status = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args(test_signal(seconds, size))
        .args(["-f", "flv"])
        .arg(path)
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        path.display()
    );
}

/// Pushes a file over RTMP as fast as the server takes it (no `-re`): a ladder that keeps up
/// with real time then never skips frames (one on a machine too busy to keep up still does,
/// and counts them in `strata_transcode_dropped_frames_total`).
pub fn push_file(url: &str, path: &Path) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// ffmpeg's HLS muxer pushing `seconds` of the test signal (320x180) in real time to
/// `playlist_url` (`…/ingest/hls/{stream}/index.m3u8`) with `-method PUT`, the key in an
/// `Authorization: Bearer` header, 2 s segments: fMP4 (with `init.mp4`) when `fmp4`, else
/// MPEG-TS.
pub fn push_hls(playlist_url: &str, key: &str, seconds: u32, fmp4: bool) -> Child {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(test_signal(seconds, "320x180"))
        .args(["-f", "hls", "-hls_time", "2", "-hls_list_size", "6"])
        .args(["-hls_flags", "delete_segments"]);
    if fmp4 {
        command.args(["-hls_segment_type", "fmp4"]);
    }
    command
        .args(["-method", "PUT", "-headers"])
        .arg(format!("Authorization: Bearer {key}\r\n"))
        .arg(playlist_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// testsrc2 + sine, H.264 with B-frames and 2 s GOPs, AAC: the encoder arguments.
fn test_signal(seconds: u32, size: &str) -> Vec<String> {
    let args = [
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &seconds.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "2",
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
    ];
    args.iter().map(|a| a.to_string()).collect()
}

/// Waits (90 s at most) until the media playlist of every rendition in `names` under `live`
/// (`live/{playback_id}`) has ENDLIST.
pub fn wait_for_end(server: &Server, live: &str, names: &[&str]) {
    let ended = wait_for(Duration::from_secs(90), || {
        names
            .iter()
            .all(|n| {
                server
                    .get_text(&format!("{live}/{n}/index.m3u8"))
                    .is_some_and(|t| t.contains("#EXT-X-ENDLIST"))
            })
            .then_some(())
    });
    assert!(ended.is_some(), "renditions did not end:\n{}", server.log());
}

/// Frames `rendition` of `playback_id` skipped to keep up with real time, per the metrics.
pub fn skipped_frames(server: &Server, playback_id: &str, rendition: &str) -> usize {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("strata_transcode_dropped_frames_total{"))
        .filter(|l| {
            l.contains(&format!("\"{playback_id}\"")) && l.contains(&format!("\"{rendition}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ffprobe -of json` with `args`.
pub fn ffprobe(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Media sequence number of the last segment in a media playlist.
pub fn last_segment_number(playlist: &str) -> Option<u64> {
    let parsed = m3u8_rs::parse_media_playlist_res(playlist.as_bytes()).ok()?;
    let count = parsed.segments.len() as u64;
    (count > 0).then(|| parsed.media_sequence + count - 1)
}

/// Writes `seconds` of testsrc2 at `size` + a sine at `sample_rate` Hz as an FLV file (no
/// real-time pacing).
pub fn make_flv(path: &Path, seconds: u32, size: &str, sample_rate: u32) {
    let status = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate={sample_rate}"),
        ])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv"])
        .arg(path)
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        path.display()
    );
}

/// The tags of an FLV file: (type, timestamp ms, body).
pub fn flv_tags(data: &[u8]) -> Vec<(u8, u32, &[u8])> {
    let mut tags = Vec::new();
    let mut i = 9 + 4;
    while i + 11 <= data.len() {
        let size = u32::from_be_bytes([0, data[i + 1], data[i + 2], data[i + 3]]) as usize;
        let ts = u32::from_be_bytes([data[i + 7], data[i + 4], data[i + 5], data[i + 6]]);
        let Some(body) = data.get(i + 11..i + 11 + size) else {
            break;
        };
        tags.push((data[i], ts, body));
        i += 11 + size + 4;
    }
    tags
}

/// One FLV that plays `first` and then `second` (its metadata dropped, its clock shifted), so
/// the second part's codec configuration arrives mid-stream, as when an encoder changes
/// resolution without reconnecting.
pub fn concat_flv(first: &Path, second: &Path, out: &Path) {
    let a = std::fs::read(first).expect("read first flv");
    let b = std::fs::read(second).expect("read second flv");
    let a_tags = flv_tags(&a);
    let end = a_tags.iter().map(|t| t.1).max().unwrap_or(0) + 33;
    let mut flv = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    let shifted = flv_tags(&b)
        .into_iter()
        .filter(|t| t.0 != 18)
        .map(|(kind, ts, body)| (kind, ts + end, body));
    for (kind, ts, body) in a_tags.into_iter().chain(shifted) {
        flv.push(kind);
        flv.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        flv.extend_from_slice(&ts.to_be_bytes()[1..]);
        flv.push((ts >> 24) as u8);
        flv.extend_from_slice(&[0, 0, 0]);
        flv.extend_from_slice(body);
        flv.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
    }
    std::fs::write(out, flv).expect("write combined flv");
}

/// Sends an FLV file to `url` in real time without re-encoding.
pub fn publish_file(url: &str, path: &Path) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(path)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// A self-signed certificate and key for `localhost` (and 127.0.0.1) in `dir`: (cert, key).
pub fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (make test-deps installs it)");
    assert!(status.success(), "openssl made a certificate");
    (cert.display().to_string(), key.display().to_string())
}

/// The sessions the admin API lists at `path` (`/api/v1/sessions`, `…?state=all`).
pub fn session_list(server: &Server, path: &str) -> Vec<serde_json::Value> {
    let (status, body) = api(server, "GET", path, Some(&server.admin_token), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .expect("a JSON list")
}

/// A local `on_publish` receiver: `/allow` answers 204, anything else 403; every request body
/// is sent to the returned channel.
pub fn hook_receiver() -> (
    String,
    std::sync::mpsc::Receiver<(String, serde_json::Value)>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let mut reader = BufReader::new(socket);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if path == "/allow" {
                "204 No Content"
            } else {
                "403 Forbidden"
            };
            let mut socket = reader.into_inner();
            let _ = write!(
                socket,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send((
                path,
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            ));
        }
    });
    (base, rx)
}

/// Creates a stream through the admin API with `body` (`name`, `ladder`, …): the answer
/// (`stream`, `key`, URLs).
pub fn create_stream_with(server: &Server, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = api(
        server,
        "POST",
        "/api/v1/streams",
        Some(&server.admin_token),
        Some(body),
    );
    assert_eq!(status, 201, "{answer}");
    serde_json::from_str(&answer).expect("json")
}

/// Seconds the media playlist at `path` lists (`None` before it exists or parses).
pub fn listed_secs(server: &Server, path: &str) -> Option<f64> {
    let text = server.get_text(path)?;
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
    Some(
        playlist
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .sum(),
    )
}

/// The first variant's media playlist under `root` (`live/{playback id}`, `vod/{session}`).
pub fn media_playlist(server: &Server, root: &str) -> Option<String> {
    let master = server.get_text(&format!("{root}/master.m3u8"))?;
    let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
    server.get_text(&format!("{root}/{variant}"))
}

/// How many segments the live broadcast of `playback_id` lists (0 before its playlist exists).
pub fn segments_listed(server: &Server, playback_id: &str) -> usize {
    media_playlist(server, &format!("live/{playback_id}"))
        .map(|p| p.matches("#EXTINF").count())
        .unwrap_or(0)
}

/// The live session of `playback_id`, once listed.
pub fn live_session(server: &Server, playback_id: &str) -> Option<serde_json::Value> {
    session_list(server, "/api/v1/sessions")
        .into_iter()
        .find(|s| s["playback_id"] == playback_id)
}

/// One 360p rung (`ladders/browser-test.toml`), for browser tests: two cores run Chromium, the
/// ladder and the players, and the rung makes the poster a preview needs (passthrough makes
/// none).
pub fn write_browser_test_ladder(dir: &Path) {
    let ladders = dir.join("ladders");
    std::fs::create_dir_all(&ladders).expect("ladders dir");
    std::fs::write(ladders.join("browser-test.toml"), BROWSER_TEST_LADDER).expect("ladder file");
}

const BROWSER_TEST_LADDER: &str = r#"
description = "360p only, for the browser tests"
source = false

[audio]
bitrate = "96k"
channels = 2
sample_rate = 48000

[[rungs]]
name = "360p"
height = 360
bitrate = "700k"
max_rate = "750k"
buffer = "1050k"
preset = "superfast"
profile = "main"
level = "3.0"
max_fps = 30
"#;

/// Runs the browser script `web/tests/e2e/{script}` (headless Chromium via playwright-core)
/// against `server`, its streams on `ladder`, with its screenshots in `target/tmp/{shots}/`;
/// fails with its output and the server's log unless it passes and every file of
/// `screenshots` is there. Returns what it printed.
pub fn run_browser_script(
    server: &Server,
    script: &str,
    ladder: &str,
    shots: &str,
    screenshots: &[&str],
) -> String {
    assert!(
        web_root().join("index.html").is_file(),
        "web/dist is not built: `make test` builds it (make web)"
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(shots);
    let _ = std::fs::remove_dir_all(&shots);
    let output = Command::new("node")
        .arg(format!("tests/e2e/{script}"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
        .env("STRATA_URL", format!("http://{}", server.http))
        .env("STRATA_ADMIN_TOKEN", &server.admin_token)
        .env("STRATA_SCREENSHOTS", &shots)
        .env("STRATA_LADDER", ladder)
        .output()
        .expect("node runs (make test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "the browser run failed (screenshots in {}):\n{stdout}\n{stderr}\nserver log:\n{}",
        shots.display(),
        server.log()
    );
    for shot in screenshots {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(
            size > 10_000,
            "screenshot {shot} is missing or empty ({size} bytes)"
        );
    }
    println!("screenshots: {}", shots.display());
    stdout
}

/// The stream kinds (`video`, `audio`) and the duration ffprobe finds at `url`.
pub fn probe_kinds_and_duration(url: &str) -> (Vec<String>, f64) {
    let probe = ffprobe(&["-show_streams", "-show_format", url]);
    let kinds = probe["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| Some(s["codec_type"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let duration = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (kinds, duration)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads the admin events stream (`/api/v1/events`) in a thread; sends (arrival ms, event name, data).
pub fn admin_events(
    server: &Server,
) -> std::sync::mpsc::Receiver<(i64, String, serde_json::Value)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = server.url("/api/v1/events");
    let token = server.admin_token.clone();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let Ok(response) = agent
            .get(&url)
            .header("Authorization", format!("Bearer {token}"))
            .call()
        else {
            return;
        };
        let mut name = String::new();
        for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
                if tx.send((now_ms(), name.clone(), value)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}
