//! The dashboard's Devices view, end to end: a device is created through the admin API, a real
//! `strata device-agent --test-pattern` connects with its token, and headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` in `web/tests/e2e/devices.mjs`) signs into the
//! dashboard, sees the device online with a signaling RTT, starts it (streaming, with the
//! stream's poster as a live preview) and stops it (online again), then renames it, revokes its
//! token (the server disconnects it: offline) and deletes it. Here: the run passes and its
//! screenshots exist.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use support::{api, Server};

/// The device agent, killed when dropped (at the end, and when the test fails on the way);
/// on a failure its log is printed.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn spawn(server: &Server, token: &str) -> Self {
        let log = server.dir.path().join("device-agent.log");
        let file = std::fs::File::create(&log).expect("agent log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["device-agent", "--server"])
            .arg(format!("http://{}", server.http))
            .args(["--token", token, "--test-pattern"])
            .current_dir(server.dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("agent log file"))
            .stderr(file)
            .spawn()
            .expect("spawn strata device-agent");
        Self { child, log }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("device agent log:\n{log}");
        }
    }
}

#[test]
fn chromium_sees_a_device_online_starts_it_with_a_preview_and_stops_it() {
    let server = Server::start_with(support::write_browser_test_ladder);
    let token = Some(server.admin_token.as_str());

    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/streams",
        token,
        Some(serde_json::json!({"name": "lobby", "ladder": "browser-test", "record": false})),
    );
    assert_eq!(status, 201, "create the stream: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("stream json");
    let stream_id = created["stream"]["id"].as_str().expect("stream id");

    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/devices",
        token,
        Some(serde_json::json!({"name": "pi-cam", "stream_id": stream_id})),
    );
    assert_eq!(status, 201, "create the device: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("device json");
    let device_id = created["device"]["id"].as_str().expect("device id");
    let device_token = created["token"].as_str().expect("device token");
    assert_eq!(created["device"]["stream_id"], stream_id, "{created}");

    let agent = Agent::spawn(&server, device_token);
    // run_browser_script passes only the harness's settings; the script's child process
    // inherits this one (the only test in this binary, so nothing else reads the environment)
    std::env::set_var("STRATA_DEVICE_ID", device_id);
    support::run_browser_script(
        &server,
        "devices.mjs",
        "browser-test",
        "devices-e2e",
        &[
            "devices-online.png",
            "devices-streaming.png",
            "devices-stopped.png",
            "devices-revoked.png",
        ],
    );
    drop(agent);
}
