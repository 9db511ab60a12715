//! The web app end to end: Strata serves the built app, and headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` in `web/tests/e2e/run.mjs`) walks through the
//! dashboard, the streams page and the watch page while ffmpeg publishes. Also the origin's
//! side of it: pages, assets and the public directory, with their headers.

mod support;

use support::Server;

/// GET `url`: status, the named headers and the body as text.
fn get_with_headers(url: &str, names: &[&str]) -> (u16, Vec<Option<String>>, String) {
    let (status, headers, body) = support::get_url_with_headers(url, names);
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn chromium_creates_a_stream_watches_it_with_hls_and_dash_and_sees_it_end() {
    let server = Server::start();
    support::run_browser_script(
        &server,
        "run.mjs",
        "low-cpu",
        "web-e2e",
        &[
            "dashboard-created.png",
            "streams-offline.png",
            "watch-hls.png",
            "watch-dash.png",
            "embed.png",
            "streams-live.png",
            "dashboard-live.png",
            "streams-ended.png",
            "watch-offline.png",
        ],
    );
}

#[test]
fn pages_assets_and_the_public_directory_are_served_with_their_rules() {
    let server = Server::start();
    let stream = server.create_stream("lobby", "passthrough");
    let page_headers = [
        "content-type",
        "content-security-policy",
        "x-frame-options",
        "cache-control",
    ];

    // Every page answers the app; only the player pages may be framed by other sites.
    for (path, framable) in [
        ("/", false),
        ("/dashboard", false),
        (&*format!("/watch/{}", stream.playback_id), true),
        (&*format!("/embed/{}", stream.playback_id), true),
    ] {
        let (status, headers, body) = get_with_headers(&server.url(path), &page_headers);
        assert_eq!(status, 200, "{path}");
        assert!(
            headers[0].as_deref().unwrap_or("").starts_with("text/html"),
            "{path}: {headers:?}"
        );
        assert!(
            body.contains(r#"<div id="app">"#),
            "{path} is the app's page"
        );
        let csp = headers[1].clone().unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        if framable {
            assert!(csp.ends_with("frame-ancestors *"), "{path}: {csp}");
            assert_eq!(headers[2], None, "{path}");
        } else {
            assert!(csp.ends_with("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(headers[2].as_deref(), Some("DENY"), "{path}");
        }
        assert_eq!(headers[3].as_deref(), Some("no-cache"), "{path}");
    }

    // The page's own assets are on this origin (nothing from a CDN) and cached for good.
    let (_, _, index) = get_with_headers(&server.url("/"), &[]);
    assert!(
        !index.contains("//cdn") && !index.contains("https://"),
        "{index}"
    );
    let script = index
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("index.html loads a script from /assets/");
    let (status, headers, body) =
        get_with_headers(&server.url(script), &["content-type", "cache-control"]);
    assert_eq!(status, 200);
    assert!(
        headers[0].as_deref().unwrap_or("").contains("javascript"),
        "{headers:?}"
    );
    assert_eq!(
        headers[1].as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert!(body.len() > 10_000);
    assert_eq!(get_with_headers(&server.url("/assets/nope.js"), &[]).0, 404);
    assert_eq!(
        get_with_headers(&server.url("/assets/../Cargo.toml"), &[]).0,
        404
    );

    // The directory: name, playback id, state; nothing only operators may see.
    let (status, _, body) = get_with_headers(&server.url("/api/public/streams"), &[]);
    assert_eq!(status, 200);
    let entries: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let lobby = entries
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "lobby"))
        .expect("lobby is listed");
    assert_eq!(lobby["playback_id"], stream.playback_id.as_str());
    assert_eq!(lobby["state"], "offline");
    assert_eq!(lobby["ready"], false);
    for hidden in ["\"id\"", "key", "str_", &stream.key] {
        assert!(
            !body.contains(hidden),
            "the directory shows `{hidden}`: {body}"
        );
    }
    let (status, _, one) = get_with_headers(
        &server.url(&format!("/api/public/streams/{}", stream.playback_id)),
        &[],
    );
    assert_eq!((status, one.contains("\"lobby\"")), (200, true), "{one}");
    assert_eq!(
        get_with_headers(&server.url("/api/public/streams/aaaaaaaaaaaaaaaa"), &[]).0,
        404
    );
    assert_eq!(
        get_with_headers(&server.url("/api/public/streams/..%2Fx"), &[]).0,
        404
    );
    assert_eq!(get_with_headers(&server.url("/nowhere"), &[]).0, 404);
}
