//! Clips and recordings in the web app, end to end: ffmpeg publishes a short broadcast on a
//! 360p ladder (which makes posters); headless Chromium (`web/tests/e2e/recordings.mjs`) cuts
//! "the last 30 s" from the dashboard while it is live and plays the clip's page (and the page
//! of a precise clip asked through the API), then finds
//! the finished broadcast in the Recordings view with its poster, plays its replay page,
//! checks its scrub previews (the thumbnails track in Chromium's WebVTT parser, the sheets,
//! a preview on hover), downloads its MP4 and deletes it. Here: the download plays in ffprobe for the broadcast's
//! length, and after the delete the recording is no longer served.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn the_dashboard_clips_a_live_broadcast_and_finds_plays_downloads_and_deletes_its_recording() {
    let server = Server::start_with_env(
        &[("STRATA__RTMP__RECONNECT_GRACE", "1")],
        write_browser_test_ladder,
    );
    let stream = server.create_stream("show", "browser-test");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 20);
    let stored = wait_for(Duration::from_secs(60), || {
        (segments_listed(&server, &stream.playback_id) >= 3).then_some(())
    });
    assert!(
        stored.is_some(),
        "the broadcast publishes:\n{}",
        server.log()
    );
    let stdout = run_browser_script(
        &server,
        "recordings.mjs",
        "browser-test",
        "recordings-e2e",
        &[
            "dashboard-clip.png",
            "clip-page.png",
            "precise-clip-page.png",
            "recordings.png",
            "replay.png",
            "replay-preview.png",
            "recordings-deleted.png",
        ],
    );
    let _ = publisher.wait();
    let recording = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RECORDING "))
        .expect("the script names the recording")
        .trim()
        .to_string();

    // the download is the whole broadcast, video and audio
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-e2e");
    let mp4 = shots.join("recording.mp4");
    let (kinds, duration) = probe_kinds_and_duration(&mp4.to_string_lossy());
    assert_eq!(kinds, ["video", "audio"], "{}", mp4.display());
    assert!(
        (17.0..=21.0).contains(&duration),
        "the download lasts {duration:.2} s of a 20 s broadcast"
    );

    // deleted: not served any more, not listed
    for path in [
        format!("vod/{recording}/master.m3u8"),
        format!("vod/{recording}/recording.mp4"),
        format!("api/public/recordings/{recording}"),
    ] {
        assert_eq!(server.get(&path).0, 404, "{path}");
    }
    let listed = session_list(&server, "/api/v1/recordings");
    assert!(
        listed.iter().all(|r| r["id"] != recording.as_str()),
        "{listed:?}"
    );
}
