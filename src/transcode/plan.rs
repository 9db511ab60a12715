//! The planner (pure): which renditions a ladder yields for one source.
//!
//! Rules: a rung taller than the source is dropped (never upscale); at most one rendition sits
//! at the source's height (the untouched source if the ladder offers it, else the first such
//! rung); a rung's frame rate is never above the source's. Widths follow the source's aspect
//! ratio, rounded to even. If every rung is taller than the source and the source is not
//! offered, the ladder's smallest rung is made at the source's height, so a small source still
//! gets one rendition.

use std::fmt;

use super::ladder::{AudioRung, Ladder, Rung};

/// What the planner knows about the source video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    /// From the SPS timing info; `None` when the encoder did not write it.
    pub fps: Option<f64>,
}

impl Source {
    /// Parses `1280x720@30` (the `@fps` part is optional).
    pub fn parse(text: &str) -> Option<Self> {
        let (size, fps) = match text.split_once('@') {
            Some((size, fps)) => (size, Some(fps.parse::<f64>().ok().filter(|f| *f > 0.0)?)),
            None => (text, None),
        };
        let (w, h) = size.split_once(['x', 'X'])?;
        let (width, height) = (w.parse().ok()?, h.parse().ok()?);
        (width > 0 && height > 0).then_some(Self { width, height, fps })
    }
}

/// One video rendition to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeRung {
    pub rung: Rung,
    pub width: u32,
    pub height: u32,
    /// The frame rate the encoder is told (the lower of the rung's cap and the source's).
    pub fps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlannedVideo {
    /// The source, untouched.
    Source,
    Encode(EncodeRung),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub source: Source,
    /// Highest first.
    pub video: Vec<PlannedVideo>,
    pub audio: AudioRung,
}

impl Plan {
    pub fn new(ladder: &Ladder, source: Source) -> Self {
        let mut video = Vec::new();
        if ladder.source {
            video.push(PlannedVideo::Source);
        }
        let mut rungs: Vec<&Rung> = ladder.rungs.iter().collect();
        rungs.sort_by(|a, b| b.height.cmp(&a.height).then(b.bitrate.cmp(&a.bitrate)));
        let mut at_source_height = ladder.source;
        for rung in &rungs {
            if rung.height > source.height {
                continue;
            }
            if rung.height == source.height {
                if at_source_height {
                    continue;
                }
                at_source_height = true;
            }
            video.push(PlannedVideo::Encode(encode_rung(rung, rung.height, source)));
        }
        if video.is_empty() {
            if let Some(smallest) = rungs.last() {
                let height = source.height & !1;
                video.push(PlannedVideo::Encode(encode_rung(smallest, height, source)));
            }
        }
        Self {
            source,
            video,
            audio: ladder.audio.clone(),
        }
    }

    pub fn encodes(&self) -> impl Iterator<Item = &EncodeRung> {
        self.video.iter().filter_map(|v| match v {
            PlannedVideo::Encode(e) => Some(e),
            PlannedVideo::Source => None,
        })
    }

    pub fn has_source(&self) -> bool {
        self.video.contains(&PlannedVideo::Source)
    }
}

fn encode_rung(rung: &Rung, height: u32, source: Source) -> EncodeRung {
    let width = if height == source.height {
        source.width
    } else {
        (f64::from(source.width) * f64::from(height) / f64::from(source.height) / 2.0).round()
            as u32
            * 2
    };
    let fps = source.fps.map_or(rung.max_fps, |f| f.min(rung.max_fps));
    EncodeRung {
        rung: rung.clone(),
        width: width.max(2) & !1,
        height,
        fps,
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fps = self
            .source
            .fps
            .map_or("unknown fps".to_string(), |fps| format!("{fps} fps"));
        writeln!(
            f,
            "source {}x{} {fps} → {} video rendition(s) + audio",
            self.source.width,
            self.source.height,
            self.video.len()
        )?;
        for v in &self.video {
            match v {
                PlannedVideo::Source => writeln!(
                    f,
                    "  {:<8} {:>4}x{:<4} untouched (copied, not transcoded)",
                    crate::media::SOURCE_RENDITION,
                    self.source.width,
                    self.source.height
                )?,
                PlannedVideo::Encode(e) => writeln!(
                    f,
                    "  {:<8} {:>4}x{:<4} {:>6.2} fps  {:>5} kb/s (max {} kb/s, buffer {} kb)  x264 {} {}@{}",
                    e.rung.name,
                    e.width,
                    e.height,
                    e.fps,
                    e.rung.bitrate / 1000,
                    e.rung.max_rate / 1000,
                    e.rung.buffer / 1000,
                    e.rung.preset,
                    e.rung.profile,
                    e.rung.level
                )?,
            }
        }
        write!(
            f,
            "  {:<8} AAC-LC {} kb/s, {} ch, {} Hz, shared by every video rendition",
            crate::media::AUDIO_RENDITION,
            self.audio.bitrate / 1000,
            self.audio.channels,
            self.audio.sample_rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::ladder::Ladders;

    fn names(plan: &Plan) -> Vec<String> {
        plan.video
            .iter()
            .map(|v| match v {
                PlannedVideo::Source => "source".to_string(),
                PlannedVideo::Encode(e) => {
                    format!("{}:{}x{}@{}", e.rung.name, e.width, e.height, e.fps)
                }
            })
            .collect()
    }

    fn default_ladder() -> Ladder {
        Ladders::shipped().get("default").unwrap().clone()
    }

    #[test]
    fn a_720p30_source_gets_no_1080p_and_no_upscale() {
        let plan = Plan::new(&default_ladder(), Source::parse("1280x720@30").unwrap());
        assert_eq!(
            names(&plan),
            ["720p:1280x720@30", "480p:854x480@30", "360p:640x360@30"]
        );
    }

    #[test]
    fn a_640x360_source_gets_exactly_one_rung_unless_the_source_is_offered() {
        let source = Source::parse("640x360@30").unwrap();
        assert_eq!(
            names(&Plan::new(&default_ladder(), source)),
            ["360p:640x360@30"]
        );
        let mut with_source = default_ladder();
        with_source.source = true;
        assert_eq!(names(&Plan::new(&with_source, source)), ["source"]);
    }

    #[test]
    fn frame_rates_are_never_raised_and_caps_apply() {
        let plan = Plan::new(&default_ladder(), Source::parse("1920x1080@60").unwrap());
        assert_eq!(
            names(&plan),
            [
                "1080p:1920x1080@60",
                "720p:1280x720@60",
                "480p:854x480@30",
                "360p:640x360@30"
            ]
        );
        let plan = Plan::new(&default_ladder(), Source::parse("1920x1080@25").unwrap());
        assert!(plan.encodes().all(|e| e.fps == 25.0));
    }

    #[test]
    fn odd_aspect_ratios_get_even_widths_and_tiny_sources_one_rung() {
        let plan = Plan::new(&default_ladder(), Source::parse("1080x1920").unwrap());
        // portrait: heights are capped by the source height (1920), so every rung fits
        assert_eq!(plan.encodes().count(), 4);
        assert!(plan.encodes().all(|e| e.width % 2 == 0));
        let plan = Plan::new(&default_ladder(), Source::parse("320x241@30").unwrap());
        assert_eq!(names(&plan), ["360p:318x240@30"]);
    }

    #[test]
    fn source_sizes_parse() {
        assert_eq!(
            Source::parse("1280x720@29.97"),
            Some(Source {
                width: 1280,
                height: 720,
                fps: Some(29.97)
            })
        );
        assert_eq!(Source::parse("1280x720").unwrap().fps, None);
        assert_eq!(Source::parse("1280x"), None);
        assert_eq!(Source::parse("0x720"), None);
        assert_eq!(Source::parse("1280x720@-1"), None);
    }
}
