//! Rewinding in the web player: ffmpeg publishes a passthrough stream (2 s segments, the
//! default two-hour DVR window); once its DVR view holds more than a minute, headless Chromium
//! (`web/tests/e2e/dvr.mjs`) plays the watch page with hls.js at the live edge, moves the
//! timeline 60 s back and plays from there through the DVR view, then returns with "Go live".

mod support;

use std::time::Duration;

use support::*;

#[test]
fn the_watch_page_rewinds_a_minute_and_returns_to_live() {
    assert!(
        web_root().join("index.html").is_file(),
        "web/dist is not built: `make test` builds it (make web)"
    );
    let server = Server::start();
    let stream = server.create_stream("rewind", "passthrough");
    // encoded beforehand: publishing costs almost nothing while the browser plays
    let scratch = tempfile::tempdir().expect("temp dir");
    let source = scratch.path().join("rewind.flv");
    encode_flv(&source, 130, "640x360");
    let mut publisher = publish_file(&server.rtmp_url(&stream.key), &source);
    let live = format!("live/{}", stream.playback_id);
    let dvr = format!("{live}/source/dvr.m3u8");
    let filled = wait_for(Duration::from_secs(120), || {
        listed_secs(&server, &dvr).filter(|secs| *secs >= 68.0)
    });
    assert!(
        filled.is_some(),
        "the DVR view never held 68 s:\n{}",
        server.log()
    );
    run_browser_script(
        &server,
        "dvr.mjs",
        "passthrough",
        "dvr-e2e",
        &[
            "dvr-live.png",
            "dvr-preview.png",
            "dvr-rewound.png",
            "dvr-back-live.png",
        ],
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}
