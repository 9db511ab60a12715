//! Go live from the browser, end to end: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` in `web/tests/e2e/golive.mjs`) with a fake camera and microphone opens the
//! Go live page, is refused with a wrong key, goes live with the right one from the page's own
//! controls, a second page plays it with hls.js and then dash.js, the streams page shows it
//! live and then ended. Here: the run passes, its screenshots exist, and the broadcast's
//! recording plays in ffprobe with video and audio.

mod support;

use std::time::Duration;

use support::{api, probe_kinds_and_duration, wait_for, Server};

#[test]
fn chromium_goes_live_from_the_go_live_page_and_the_broadcast_plays_and_is_recorded() {
    // one 360p rung: two cores run Chromium's encoder, the ladder and two players
    let server = Server::start_with(support::write_browser_test_ladder);
    let stdout = support::run_browser_script(
        &server,
        "golive.mjs",
        "browser-test",
        "golive-e2e",
        &[
            "golive-bad-key.png",
            "golive-live.png",
            "golive-watch-hls.png",
            "golive-watch-dash.png",
            "golive-streams-live.png",
            "golive-ended.png",
        ],
    );
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("GOLIVE_RESULT "))
        .and_then(|json| serde_json::from_str(json).ok())
        .expect("the run names its broadcast");
    let stream_id = result["stream_id"].as_str().expect("stream id");
    // the recording of the broadcast the page started and stopped
    let recording = wait_for(Duration::from_secs(30), || {
        let (status, body) = api(
            &server,
            "GET",
            &format!("/api/v1/recordings?stream_id={stream_id}"),
            Some(&server.admin_token),
            None,
        );
        (status == 200).then_some(())?;
        let recordings: serde_json::Value = serde_json::from_str(&body).ok()?;
        recordings.as_array()?.iter().find_map(|r| {
            r["ended_at"].as_i64()?;
            r["id"].as_str().map(str::to_string)
        })
    })
    .unwrap_or_else(|| panic!("the broadcast's recording ended:\n{}", server.log()));
    let (kinds, duration) =
        probe_kinds_and_duration(&server.url(&format!("vod/{recording}/master.m3u8")));
    assert!(
        kinds.contains(&"video".into()) && kinds.contains(&"audio".into()),
        "the recording has video and audio: {kinds:?}"
    );
    assert!(duration >= 10.0, "the recording lasts {duration} s");
}
