//! RTMPS: ffmpeg publishes over TLS (a self-signed certificate made with openssl) to the
//! RTMPS listener; the broadcast plays through HLS and DASH on passthrough and on a transcoding
//! ladder; a wrong key is refused; plain RTMP or silence on the TLS port is closed; RTMPS
//! settings that cannot work stop the server at start and name the setting.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{ffprobe, publish, self_signed, wait_for, Server};

/// A server with RTMPS on (both listeners on loopback, ports chosen by the OS).
fn rtmps_server() -> (Server, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(certs.path());
    let server = Server::start_with_env(
        &[
            ("STRATA__RTMPS__LISTEN", "127.0.0.1:0"),
            ("STRATA__RTMPS__CERT", &cert),
            ("STRATA__RTMPS__KEY", &key),
            ("STRATA__RTMP__HANDSHAKE_TIMEOUT", "2"),
        ],
        |_| {},
    );
    (server, certs)
}

fn rtmps_url(server: &Server, key: &str) -> String {
    let addr = server.rtmps.as_deref().expect("the RTMPS listener is on");
    format!("rtmps://{addr}/live/{key}")
}

/// The value of one series in the server's `/metrics`, if present.
fn metric(server: &Server, series: &str) -> Option<f64> {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body).lines().find_map(|line| {
        let value = line.strip_prefix(series)?.trim();
        value.parse().ok()
    })
}

/// Publishes 6 s over RTMPS to a stream on `ladder` and checks both manifests decode with
/// video and audio and last about as long.
fn publishes_and_plays(ladder: &str) {
    let (server, _certs) = rtmps_server();
    let stream = server.create_stream("secure", ladder);
    let mut ffmpeg = publish(&rtmps_url(&server, &stream.key), 6);
    let status = ffmpeg.wait().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg published over RTMPS to the end");
    let live = format!("live/{}", stream.playback_id);
    let ended = wait_for(Duration::from_secs(15), || {
        let master = server.get_text(&format!("{live}/master.m3u8"))?;
        let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
        server
            .get_text(&format!("{live}/{variant}"))
            .filter(|p| p.contains("#EXT-X-ENDLIST"))
    })
    .expect("the broadcast ends with its playlist finished");
    let playlist = m3u8_rs::parse_media_playlist_res(ended.as_bytes()).expect("playlist parses");
    let listed: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!((5.0..=7.0).contains(&listed), "{listed} s listed of 6 s");
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let probe = ffprobe(&[
            "-show_streams",
            "-show_format",
            &server.url(&format!("{live}/{manifest}")),
        ]);
        let types: Vec<&str> = probe["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["codec_type"].as_str())
            .collect();
        assert!(types.contains(&"video"), "{manifest}: {types:?}");
        assert!(types.contains(&"audio"), "{manifest}: {types:?}");
        let seconds: f64 = probe["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0);
        assert!((5.0..=7.0).contains(&seconds), "{manifest}: {seconds} s");
    }
    assert_eq!(
        metric(
            &server,
            r#"strata_publishes_total{protocol="rtmps",result="accepted"}"#
        ),
        Some(1.0),
        "the publish is counted as RTMPS"
    );
    let log = server.log();
    assert!(log.contains("RTMPS connection closed"), "{log}");
    assert!(!log.contains(&stream.key), "the key was logged");
}

#[test]
fn ffmpeg_publishes_over_rtmps_on_passthrough() {
    publishes_and_plays("passthrough");
}

#[test]
fn ffmpeg_publishes_over_rtmps_on_a_transcoding_ladder() {
    publishes_and_plays("default");
}

#[test]
fn rtmps_refuses_a_wrong_key_plain_rtmp_and_a_silent_client() {
    let (server, _certs) = rtmps_server();
    server.create_stream("secure", "passthrough");
    // a wrong key over TLS: refused, ffmpeg fails
    let started = Instant::now();
    let mut wrong = publish(&rtmps_url(&server, "sk_wrong"), 2);
    assert!(
        !wrong.wait().expect("ffmpeg runs").success(),
        "a wrong key published over RTMPS"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &server,
            r#"strata_publishes_total{protocol="rtmps",result="bad_key"}"#
        ),
        Some(1.0)
    );
    // plain RTMP to the TLS port: no TLS, closed
    let plain = server.rtmps.clone().expect("rtmps");
    let mut rtmp = publish(&format!("rtmp://{plain}/live/sk_any"), 2);
    assert!(!rtmp.wait().expect("ffmpeg runs").success());
    let refused = wait_for(Duration::from_secs(5), || {
        server.log().contains("TLS handshake failed").then_some(())
    });
    assert!(refused.is_some(), "{}", server.log());
    // a client that connects and says nothing is closed after the handshake timeout (2 s)
    let mut silent = std::net::TcpStream::connect(&plain).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let waited = Instant::now();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut silent, &mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the silent client got {read:?}"
    );
    assert!(
        waited.elapsed() < Duration::from_secs(8),
        "closed after {:?}",
        waited.elapsed()
    );
    let closed = wait_for(Duration::from_secs(5), || {
        server
            .log()
            .contains("no TLS handshake within")
            .then_some(())
    });
    assert!(closed.is_some(), "{}", server.log());
    // plain RTMP still works beside it
    let stream = server.create_stream("plain", "passthrough");
    let mut ok = publish(&server.rtmp_url(&stream.key), 2);
    assert!(ok.wait().expect("ffmpeg runs").success());
}

/// Runs `strata serve` with `env` and expects it to stop at start; returns its stderr.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .current_dir(dir.path())
        .env("STRATA__DATA_DIR", dir.path().join("data"))
        .env("STRATA__RTMP__LISTEN", "127.0.0.1:0")
        .env("STRATA__HTTP__LISTEN", "127.0.0.1:0")
        .env("STRATA__RTMPS__LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("strata runs");
    assert!(!out.status.success(), "strata started with {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rtmps_settings_that_cannot_work_name_the_setting() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, _) = self_signed(certs.path());
    let half = refused_at_start(&[("STRATA__RTMPS__CERT", &cert)]);
    assert!(half.contains("rtmps.key"), "{half}");
    let missing = certs.path().join("nowhere.pem").display().to_string();
    let unreadable = refused_at_start(&[
        ("STRATA__RTMPS__CERT", &missing),
        ("STRATA__RTMPS__KEY", &missing),
    ]);
    assert!(
        unreadable.contains("rtmps.cert") && unreadable.contains(&missing),
        "{unreadable}"
    );
    // a certificate where the key should be
    let swapped = refused_at_start(&[
        ("STRATA__RTMPS__CERT", &cert),
        ("STRATA__RTMPS__KEY", &cert),
    ]);
    assert!(swapped.contains("rtmps.key"), "{swapped}");
}
