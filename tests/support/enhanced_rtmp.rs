//! Enhanced RTMP tags for tests: FFmpeg 5.1's FLV muxer cannot write them, so a clip is
//! encoded into MP4 by the real ffmpeg CLI (x265, libaom, libvpx, AAC), its packets and
//! configuration records are read back with ffprobe (`-show_data`), and the tags are built
//! from them exactly as OBS 30+ sends them: `hvc1`/`av01`/`vp09` sequence starts and coded
//! frames (`hvc1` with a composition time), legacy AAC audio tags.

use std::path::Path;
use std::process::Command;

use super::rtmp_client::ScriptedPublisher;

/// A video codec OBS can send over Enhanced RTMP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Codec {
    Hevc,
    Av1,
    Vp9,
}

impl Codec {
    fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Codec::Hevc => b"hvc1",
            Codec::Av1 => b"av01",
            Codec::Vp9 => b"vp09",
        }
    }

    fn encoder_args(self) -> &'static [&'static str] {
        match self {
            // B-frames, so composition times matter; 2 s GOPs at 30 fps
            Codec::Hevc => &[
                "-c:v",
                "libx265",
                "-tag:v",
                "hvc1",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=none:info=0:keyint=60:min-keyint=60:scenecut=0:bframes=2",
            ],
            Codec::Av1 => &[
                "-c:v",
                "libaom-av1",
                "-cpu-used",
                "8",
                "-row-mt",
                "1",
                "-usage",
                "realtime",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-b:v",
                "400k",
            ],
            Codec::Vp9 => &[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-b:v",
                "400k",
            ],
        }
    }
}

/// One FLV tag: (type 8 audio / 9 video, timestamp ms, body), in decode order.
pub type Tag = (u8, u32, Vec<u8>);

/// Encodes `seconds` of `size` testsrc2 + a 440 Hz sine as `codec` + AAC into `dir` and
/// returns the Enhanced RTMP tags of it, sorted by decode time.
pub fn tags(dir: &Path, codec: Codec, seconds: u32, size: &str) -> Vec<Tag> {
    let clip = dir.join(format!("{codec:?}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"])
        .args(codec.encoder_args())
        .args(["-c:a", "aac", "-b:a", "96k", "-ac", "2"])
        .arg(&clip)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "encoding the {codec:?} clip");
    let probe = |what: &str| {
        let out = Command::new("ffprobe")
            .args(["-v", "error", what, "-show_data", "-of", "json"])
            .arg(&clip)
            .output()
            .expect("ffprobe");
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("ffprobe json")
    };
    let streams = probe("-show_streams");
    let streams = streams["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio");
    let record = match codec {
        // FFmpeg's FLV muxer writes the vpcC FullBox header, then the record
        Codec::Vp9 => vec![1, 0, 0, 0, 0, 31, 0x80, 2, 2, 2, 0, 0],
        _ => hexdump(video["extradata"].as_str().expect("video extradata")),
    };
    let asc = hexdump(audio["extradata"].as_str().expect("audio extradata"));
    let base = |s: &serde_json::Value| -> f64 {
        let tb = s["time_base"].as_str().expect("time_base");
        let (n, d) = tb.split_once('/').expect("n/d");
        n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap()
    };
    let (video_index, video_tb) = (video["index"].as_i64(), base(video));
    let audio_tb = base(audio);
    let packets = probe("-show_packets");
    let mut timed = Vec::new();
    for p in packets["packets"].as_array().expect("packets") {
        let is_video = p["stream_index"].as_i64() == video_index;
        let tb = if is_video { video_tb } else { audio_tb };
        let dts = p["dts"].as_i64().expect("dts") as f64 * tb * 1000.0;
        let pts = p["pts"].as_i64().expect("pts") as f64 * tb * 1000.0;
        let data = hexdump(p["data"].as_str().expect("data"));
        let key = p["flags"].as_str().unwrap_or("").starts_with('K');
        timed.push((is_video, dts, pts, key, data));
    }
    // RTMP timestamps are unsigned: B-frame streams start at a negative decode time
    let shift = timed.iter().map(|t| t.1).fold(0.0, f64::min);
    let mut tags = vec![
        (9, 0, video_tag(codec, 0x10, 0, None, &record)),
        (8, 0, aac_tag(0, &asc)),
    ];
    for (is_video, dts, pts, key, data) in timed {
        let ms = (dts - shift).round() as u32;
        if is_video {
            let frame_type = if key { 0x10 } else { 0x20 };
            let cts = (codec == Codec::Hevc).then(|| (pts - dts).round() as i32);
            tags.push((9, ms, video_tag(codec, frame_type, 1, cts, &data)));
        } else {
            tags.push((8, ms, aac_tag(1, &data)));
        }
    }
    tags.sort_by_key(|t| t.1);
    tags
}

/// `IsExHeader | FrameType | PacketType`, the FourCC, the composition time (CodedFrames of
/// `hvc1`), the payload.
fn video_tag(
    codec: Codec,
    frame_type: u8,
    packet_type: u8,
    cts: Option<i32>,
    data: &[u8],
) -> Vec<u8> {
    let mut tag = vec![0x80 | frame_type | packet_type];
    tag.extend_from_slice(codec.fourcc());
    if packet_type == 1 {
        if let Some(cts) = cts {
            tag.extend_from_slice(&cts.to_be_bytes()[1..]);
        }
    }
    tag.extend_from_slice(data);
    tag
}

fn aac_tag(packet_type: u8, data: &[u8]) -> Vec<u8> {
    let mut tag = vec![0xAF, packet_type];
    tag.extend_from_slice(data);
    tag
}

/// The bytes of ffprobe's `-show_data` hex dump (`00000000: 0101 6000 …  ascii`).
fn hexdump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let hex = line.split_once(": ").expect("offset").1;
        let hex = hex.split("  ").next().unwrap_or("");
        let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        for pair in digits.as_bytes().chunks(2) {
            out.push(u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap());
        }
    }
    out
}

/// Publishes `tags` to `key`, then closes the connection: paced at real time (a live
/// encoder's pace, as OBS sends) or, with `real_time` false, as fast as the server takes them
/// (a ladder is then never behind real time and never skips frames, however loaded the
/// machine is).
pub fn publish(rtmp: &str, key: &str, tags: &[Tag], real_time: bool) -> Result<(), String> {
    let mut publisher = ScriptedPublisher::publish(rtmp, key)?;
    let start = std::time::Instant::now();
    for (kind, ms, body) in tags {
        let due = std::time::Duration::from_millis(u64::from(*ms));
        if let Some(wait) = due.checked_sub(start.elapsed()).filter(|_| real_time) {
            std::thread::sleep(wait);
        }
        publisher.tag(*kind, body, *ms)?;
    }
    Ok(())
}
