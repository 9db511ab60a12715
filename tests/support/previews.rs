//! Scrub previews as a player finds them: a VOD's WebVTT thumbnails track, parsed here (the
//! browser tests parse it again with Chromium's own WebVTT parser), and the sprite sheets its
//! cues point at, fetched over HTTP, decoded by ffmpeg and kept under `target/tmp/previews/`
//! (`{root}-previews-{n}.jpg`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::{ffprobe, wait_for, Server};

/// One cue of a thumbnails track.
#[derive(Debug, Clone, PartialEq)]
pub struct ThumbnailCue {
    pub start: f64,
    pub end: f64,
    pub sheet: String,
    pub region: (u32, u32, u32, u32),
}

fn seconds(stamp: &str) -> Option<f64> {
    let mut total = 0.0;
    for part in stamp.trim().split(':') {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(total)
}

/// The cues of a thumbnails track; panics on anything that is not one.
pub fn parse_thumbnails(text: &str) -> Vec<ThumbnailCue> {
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next().map(str::trim), Some("WEBVTT"), "{text}");
    blocks
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut lines = block.trim().lines();
            let times = lines.next().expect("a cue's times");
            let (start, end) = times.split_once(" --> ").expect("start --> end");
            let payload = lines.next().expect("a cue's text");
            let (sheet, fragment) = payload.split_once("#xywh=").expect("a media fragment");
            let numbers: Vec<u32> = fragment
                .split(',')
                .map(|n| n.parse().expect("a number"))
                .collect();
            assert_eq!(numbers.len(), 4, "{payload}");
            ThumbnailCue {
                start: seconds(start).expect("a start time"),
                end: seconds(end).expect("an end time"),
                sheet: sheet.to_string(),
                region: (numbers[0], numbers[1], numbers[2], numbers[3]),
            }
        })
        .collect()
}

/// The thumbnails track under `root` (`vod/{id}` or `live/{playback_id}`), when it is served.
pub fn thumbnails(server: &Server, root: &str) -> Option<Vec<ThumbnailCue>> {
    let (status, body) = server.get(&format!("{root}/thumbnails.vtt"));
    (status == 200).then(|| parse_thumbnails(&String::from_utf8_lossy(&body)))
}

/// Waits for VOD `id`'s thumbnails track and checks it the way a player uses it: its cues follow
/// each other from 0 to about `duration` s, one every few seconds, and `check_sheets`.
/// Returns the cues.
pub fn check_previews(server: &Server, id: &str, duration: f64) -> Vec<ThumbnailCue> {
    let root = format!("vod/{id}");
    let cues = wait_for(Duration::from_secs(60), || thumbnails(server, &root))
        .unwrap_or_else(|| panic!("{root}/thumbnails.vtt is served:\n{}", server.log()));
    assert!(!cues.is_empty(), "{cues:?}");
    assert_eq!(cues[0].start, 0.0, "{cues:?}");
    for pair in cues.windows(2) {
        assert!(
            (pair[0].end - pair[1].start).abs() < 0.002,
            "the cues follow each other: {cues:?}"
        );
        assert!(pair[1].start - pair[0].start >= 3.9, "{cues:?}");
    }
    let last = cues.last().expect("a cue").end;
    assert!(
        (last - duration).abs() <= 0.5,
        "the cues end at {last} s of {duration} s"
    );
    check_sheets(server, &root, &cues);
    cues
}

/// Each cue points inside a sheet under `root` that is served as a JPEG, and shows a picture
/// there (not the black of a keyframe that did not decode).
pub fn check_sheets(server: &Server, root: &str, cues: &[ThumbnailCue]) {
    let mut sheets: BTreeMap<&str, Vec<&ThumbnailCue>> = BTreeMap::new();
    for cue in cues {
        sheets.entry(&cue.sheet).or_default().push(cue);
    }
    // kept for a look
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("previews");
    std::fs::create_dir_all(&dir).expect("a directory for the sheets");
    for (sheet, cues) in sheets {
        let (status, jpeg) = server.get(&format!("{root}/{sheet}"));
        assert_eq!(status, 200, "{root}/{sheet} is served");
        let file = dir.join(format!(
            "{}-{}",
            root.replace('/', "-"),
            sheet.replace('/', "-")
        ));
        std::fs::write(&file, &jpeg).expect("write the sheet");
        let probe = ffprobe(&["-show_streams", &file.to_string_lossy()]);
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], "mjpeg", "{sheet}");
        let width = stream["width"].as_u64().expect("width") as u32;
        let height = stream["height"].as_u64().expect("height") as u32;
        let gray = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&file)
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .expect("run ffmpeg");
        assert!(gray.status.success(), "{sheet} decodes");
        let luma = gray.stdout;
        assert_eq!(luma.len(), (width * height) as usize, "{sheet}");
        for cue in cues {
            let (x, y, w, h) = cue.region;
            assert!(
                w > 0 && h > 0 && x + w <= width && y + h <= height,
                "{cue:?} lies outside {sheet} ({width}x{height})"
            );
            let mut sum = 0u64;
            for row in y..y + h {
                let start = (row * width + x) as usize;
                sum += luma[start..start + w as usize]
                    .iter()
                    .map(|&v| u64::from(v))
                    .sum::<u64>();
            }
            let mean = sum as f64 / f64::from(w * h);
            assert!(
                mean > 20.0,
                "{cue:?} of {sheet} is black (mean luma {mean:.1})"
            );
        }
    }
}
