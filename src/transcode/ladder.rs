//! Ladder definitions: `ladders/*.toml`, one ladder per file, named after the file (`default`,
//! `low-cpu`, …). Parsed with `toml` + serde into raw structs, then validated into `Ladder` with
//! errors that name the file and the field (`rungs[1].height: …`).
//!
//! The three shipped ladders are compiled in; a directory of files (config `transcode.ladders`)
//! adds ladders or replaces a shipped one of the same name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::db::ids;

#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no ladder named `{0}` (known: {1})")]
    Unknown(String, String),
}

/// x264 presets, fastest first.
pub const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];
const PROFILES: [&str; 3] = ["baseline", "main", "high"];
const LEVELS: [&str; 16] = [
    "1", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1", "4.2", "5", "5.1",
    "5.2",
];
const SHIPPED: [(&str, &str); 4] = [
    ("default", include_str!("../../ladders/default.toml")),
    (
        "passthrough",
        include_str!("../../ladders/passthrough.toml"),
    ),
    ("low-cpu", include_str!("../../ladders/low-cpu.toml")),
    (
        "low-latency",
        include_str!("../../ladders/low-latency.toml"),
    ),
];

/// One H.264 rung as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    pub name: String,
    /// Output height; the width follows the source's aspect ratio (even).
    pub height: u32,
    /// Target bit rate, bits/s (x264 ABR).
    pub bitrate: u64,
    /// VBV maximum rate, bits/s.
    pub max_rate: u64,
    /// VBV buffer size, bits.
    pub buffer: u64,
    pub preset: String,
    pub profile: String,
    /// As x264 spells it (`3.1`, `4`).
    pub level: String,
    /// The rung never exceeds this frame rate (nor the source's).
    pub max_fps: f64,
    /// Encode for low delay (the ladder's `latency = "low"`): no B-frames, no lookahead, slice
    /// threads instead of frame threads (x264 `tune=zerolatency`).
    pub low_delay: bool,
}

/// How much delay a ladder's encoders may add.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Latency {
    /// x264's usual pipeline (B-frames, lookahead, frame threads): best quality per bit.
    #[default]
    Normal,
    /// At most about 100 ms: for low-latency HLS/DASH viewers.
    Low,
}

/// The one AAC rendition every video rung shares.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioRung {
    pub bitrate: u64,
    pub channels: u8,
    pub sample_rate: u32,
}

impl Default for AudioRung {
    fn default() -> Self {
        Self {
            bitrate: 128_000,
            channels: 2,
            sample_rate: 48_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    pub name: String,
    pub description: String,
    /// The source is also offered untouched, as the top rendition.
    pub source: bool,
    pub rungs: Vec<Rung>,
    pub audio: AudioRung,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLadder {
    #[serde(default)]
    description: String,
    #[serde(default)]
    source: bool,
    #[serde(default)]
    latency: Latency,
    #[serde(default)]
    rungs: Vec<RawRung>,
    audio: Option<RawAudio>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    name: String,
    height: i64,
    bitrate: String,
    max_rate: Option<String>,
    buffer: Option<String>,
    #[serde(default = "default_preset")]
    preset: String,
    #[serde(default = "default_profile")]
    profile: String,
    #[serde(default = "default_level")]
    level: String,
    #[serde(default = "default_max_fps")]
    max_fps: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    bitrate: String,
    #[serde(default = "default_channels")]
    channels: i64,
    #[serde(default = "default_sample_rate")]
    sample_rate: i64,
}

fn default_preset() -> String {
    "veryfast".into()
}
fn default_profile() -> String {
    "high".into()
}
fn default_level() -> String {
    "4.1".into()
}
fn default_max_fps() -> f64 {
    60.0
}
fn default_channels() -> i64 {
    2
}
fn default_sample_rate() -> i64 {
    48_000
}

/// `5000k`, `5M`, `800000` → bits per second.
pub fn parse_bitrate(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1_000.0),
        (i, 'm' | 'M') => (&text[..i], 1_000_000.0),
        _ => (text, 1.0),
    };
    let value: f64 = digits.trim().parse().ok()?;
    (value.is_finite() && value > 0.0).then(|| (value * scale).round() as u64)
}

impl Ladder {
    /// Parses and validates one ladder file's text; `file` names it in errors, and its stem is
    /// the ladder's name.
    pub fn parse(file: &str, text: &str) -> Result<Self, LadderError> {
        let raw: RawLadder = toml::from_str(text).map_err(|e| LadderError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let name = Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let invalid = |field: String, message: String| LadderError::Invalid {
            file: file.to_string(),
            field,
            message,
        };
        if !ids::is_name(&name) {
            return Err(invalid("(file name)".into(), ids::NAME_RULE.into()));
        }
        if raw.rungs.is_empty() && !raw.source {
            return Err(invalid(
                "rungs".into(),
                "a ladder needs at least one rung, or `source = true`".into(),
            ));
        }
        let mut rungs = Vec::new();
        for (i, r) in raw.rungs.into_iter().enumerate() {
            let mut rung = validate_rung(r)
                .map_err(|(field, message)| invalid(format!("rungs[{i}].{field}"), message))?;
            rung.low_delay = raw.latency == Latency::Low;
            if rungs.iter().any(|o: &Rung| o.name == rung.name) {
                return Err(invalid(
                    format!("rungs[{i}].name"),
                    format!("`{}` is used by another rung", rung.name),
                ));
            }
            rungs.push(rung);
        }
        let audio = match raw.audio {
            Some(a) => validate_audio(a).map_err(|(f, m)| invalid(format!("audio.{f}"), m))?,
            None => AudioRung::default(),
        };
        Ok(Ladder {
            name,
            description: raw.description,
            source: raw.source,
            rungs,
            audio,
        })
    }

    /// Whether anything is decoded and encoded (false: pure passthrough).
    pub fn transcodes(&self) -> bool {
        !self.rungs.is_empty()
    }
}

type FieldError = (&'static str, String);

fn validate_rung(r: RawRung) -> Result<Rung, FieldError> {
    use crate::media::{AUDIO_RENDITION, SOURCE_RENDITION};
    if !ids::is_name(&r.name) || r.name == SOURCE_RENDITION || r.name == AUDIO_RENDITION {
        return Err((
            "name",
            format!(
                "`{}`: {} (and not `{SOURCE_RENDITION}` or `{AUDIO_RENDITION}`)",
                r.name,
                ids::NAME_RULE
            ),
        ));
    }
    if !(64..=4320).contains(&r.height) || r.height % 2 != 0 {
        return Err((
            "height",
            format!("{} must be an even number from 64 to 4320", r.height),
        ));
    }
    let bitrate = rate("bitrate", &r.bitrate, 50_000, 100_000_000)?;
    let max_rate = match &r.max_rate {
        Some(text) => rate("max_rate", text, 50_000, 200_000_000)?,
        None => bitrate * 107 / 100,
    };
    if max_rate < bitrate {
        return Err((
            "max_rate",
            format!("{max_rate} b/s is below the bitrate ({bitrate} b/s)"),
        ));
    }
    let buffer = match &r.buffer {
        Some(text) => rate("buffer", text, 10_000, 400_000_000)?,
        None => max_rate * 3 / 2,
    };
    let one_of = |field, value: &str, allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(value.to_string())
        } else {
            Err((
                field,
                format!("`{value}` is not one of {}", allowed.join(", ")),
            ))
        }
    };
    let level = r.level.trim_end_matches(".0").to_string();
    if !(1.0..=120.0).contains(&r.max_fps) {
        return Err((
            "max_fps",
            format!("{} must be between 1 and 120", r.max_fps),
        ));
    }
    Ok(Rung {
        name: r.name,
        height: r.height as u32,
        bitrate,
        max_rate,
        buffer,
        preset: one_of("preset", &r.preset, &PRESETS)?,
        profile: one_of("profile", &r.profile, &PROFILES)?,
        level: one_of("level", &level, &LEVELS)?,
        max_fps: r.max_fps,
        low_delay: false,
    })
}

fn rate(field: &'static str, text: &str, min: u64, max: u64) -> Result<u64, FieldError> {
    match parse_bitrate(text) {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err((field, format!("{v} b/s is outside {min}..={max}"))),
        None => Err((
            field,
            format!("`{text}` is not a rate (write e.g. `2800k`, `5M` or `800000`)"),
        )),
    }
}

fn validate_audio(a: RawAudio) -> Result<AudioRung, FieldError> {
    let bitrate = rate("bitrate", &a.bitrate, 32_000, 512_000)?;
    if !(1..=2).contains(&a.channels) {
        return Err(("channels", format!("{} must be 1 or 2", a.channels)));
    }
    const RATES: [i64; 4] = [22_050, 32_000, 44_100, 48_000];
    if !RATES.contains(&a.sample_rate) {
        return Err((
            "sample_rate",
            format!(
                "{} must be one of 22050, 32000, 44100, 48000",
                a.sample_rate
            ),
        ));
    }
    Ok(AudioRung {
        bitrate,
        channels: a.channels as u8,
        sample_rate: a.sample_rate as u32,
    })
}

/// Every ladder a server knows, by name.
#[derive(Debug, Clone)]
pub struct Ladders {
    by_name: BTreeMap<String, Ladder>,
}

impl Ladders {
    /// The shipped ladders.
    pub fn shipped() -> Self {
        let by_name = SHIPPED
            .iter()
            .filter_map(|(name, text)| Ladder::parse(&format!("{name}.toml"), text).ok())
            .map(|l| (l.name.clone(), l))
            .collect();
        Self { by_name }
    }

    /// The shipped ladders plus every `*.toml` in `dir` (a missing directory adds nothing);
    /// any invalid file is an error.
    pub fn load(dir: &Path) -> Result<Self, LadderError> {
        let mut ladders = Self::shipped();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ladders),
            Err(source) => {
                return Err(LadderError::Read {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let ladder = Self::read_file(&path)?;
            ladders.by_name.insert(ladder.name.clone(), ladder);
        }
        Ok(ladders)
    }

    /// Reads and validates one ladder file.
    pub fn read_file(path: &Path) -> Result<Ladder, LadderError> {
        let text = std::fs::read_to_string(path).map_err(|source| LadderError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ladder::parse(&path.display().to_string(), &text)
    }

    pub fn get(&self, name: &str) -> Result<&Ladder, LadderError> {
        self.by_name.get(name).ok_or_else(|| {
            LadderError::Unknown(
                name.to_string(),
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_ladders_are_valid() {
        for (name, text) in SHIPPED {
            let ladder = Ladder::parse(&format!("{name}.toml"), text).unwrap();
            assert_eq!(ladder.name, name);
        }
        let ladders = Ladders::shipped();
        let default = ladders.get("default").unwrap();
        let heights: Vec<u32> = default.rungs.iter().map(|r| r.height).collect();
        assert_eq!(heights, [1080, 720, 480, 360]);
        assert_eq!(default.rungs[1].bitrate, 2_800_000);
        assert!(!default.source);
        assert!(ladders.get("passthrough").unwrap().source);
        assert!(!ladders.get("passthrough").unwrap().transcodes());
        assert_eq!(ladders.get("low-cpu").unwrap().rungs[0].preset, "superfast");
        let low = ladders.get("low-latency").unwrap();
        let names: Vec<&str> = low.rungs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["720p", "360p"]);
        assert!(low.rungs.iter().all(|r| r.low_delay));
        assert!(
            default.rungs.iter().all(|r| !r.low_delay),
            "the default stays as it is"
        );
    }

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_bitrate("5000k"), Some(5_000_000));
        assert_eq!(parse_bitrate("2.5M"), Some(2_500_000));
        assert_eq!(parse_bitrate("800000"), Some(800_000));
        assert_eq!(parse_bitrate("fast"), None);
        assert_eq!(parse_bitrate("-3k"), None);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                "[[rungs]]\nname = \"a\"\nheight = 721\nbitrate = \"1M\"",
                "rungs[0].height",
            ),
            (
                "[[rungs]]\nname = \"a\"\nheight = 720\nbitrate = \"lots\"",
                "rungs[0].bitrate",
            ),
            (
                "[[rungs]]\nname = \"a\"\nheight = 720\nbitrate = \"1M\"\npreset = \"quick\"",
                "rungs[0].preset",
            ),
            (
                "[[rungs]]\nname = \"a\"\nheight = 720\nbitrate = \"2M\"\nmax_rate = \"1M\"",
                "rungs[0].max_rate",
            ),
            (
                "[[rungs]]\nname = \"a\"\nheight = 720\nbitrate = \"1M\"\n[[rungs]]\nname = \"a\"\nheight = 360\nbitrate = \"1M\"",
                "rungs[1].name",
            ),
            (
                "[[rungs]]\nname = \"source\"\nheight = 720\nbitrate = \"1M\"",
                "rungs[0].name",
            ),
            ("source = false", "rungs"),
            ("source = true\n[audio]\nbitrate = \"128k\"\nchannels = 6", "audio.channels"),
            ("source = true\nspeed = 2", "unknown field `speed`"),
        ];
        for (text, field) in cases {
            let err = Ladder::parse("ladders/x.toml", text)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("ladders/x.toml: "), "{err}");
            assert!(err.contains(field), "{text:?} → {err}");
        }
    }

    #[test]
    fn a_directory_adds_and_replaces_ladders_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tiny.toml"),
            "[[rungs]]\nname = \"240p\"\nheight = 240\nbitrate = \"400k\"",
        )
        .unwrap();
        let ladders = Ladders::load(dir.path()).unwrap();
        assert_eq!(ladders.get("tiny").unwrap().rungs[0].max_rate, 428_000);
        assert!(ladders.get("default").is_ok());
        assert!(ladders
            .get("nope")
            .unwrap_err()
            .to_string()
            .contains("tiny"));
        std::fs::write(dir.path().join("bad.toml"), "rungs = 3").unwrap();
        let err = Ladders::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
    }
}
