//! HLS playlists (RFC 8216) with m3u8-rs: the multivariant playlist (video variants plus one
//! audio rendition group) and each rendition's media playlist (fMP4, version 7).
//!
//! URIs are relative (`source/index.m3u8`, `init.mp4`, `{n}.m4s`), so the same text works at the
//! origin, behind a CDN and for the VOD copy. The DVR view's multivariant playlist names each
//! rendition's `dvr.m3u8` instead.

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, Map, MasterPlaylist, MediaPlaylist, MediaPlaylistType,
    MediaSegment, Resolution, VariantStream,
};

use super::{Presentation, SegmentEntry, Timeline};
use crate::media::CodecConfig;

/// Group id of the audio rendition every variant references.
pub const AUDIO_GROUP: &str = "audio";

/// The media playlist of one rendition.
pub fn media_playlist(p: &Presentation, timeline: &Timeline) -> String {
    let scale = f64::from(timeline.timescale);
    let listed = p.listed(timeline);
    let segments = listed
        .iter()
        .enumerate()
        .map(|(i, s)| MediaSegment {
            uri: format!("{}.m4s", s.number),
            duration: (s.duration as f64 / scale) as f32,
            map: (i == 0).then(|| Map {
                uri: "init.mp4".into(),
                ..Default::default()
            }),
            program_date_time: Some(s.wall_clock.fixed_offset()),
            discontinuity: s.discontinuity,
            ..Default::default()
        })
        .collect();
    let playlist = MediaPlaylist {
        version: Some(7),
        target_duration: p.target_duration,
        media_sequence: p.media_sequence(timeline),
        discontinuity_sequence: p.discontinuity_sequence(timeline),
        segments,
        end_list: p.ended || p.is_vod(),
        playlist_type: p.is_vod().then_some(MediaPlaylistType::Vod),
        independent_segments: true,
        ..Default::default()
    };
    render(|w| playlist.write_to(w))
}

/// The multivariant playlist: one variant per video rendition (highest first), each
/// referencing the one audio rendition. BANDWIDTH is the measured peak segment bit rate of the
/// variant plus audio; AVERAGE-BANDWIDTH the measured average.
pub fn master_playlist(p: &Presentation) -> String {
    let mut alternatives = Vec::new();
    if let Some(audio) = &p.audio {
        let channels = match &audio.codec {
            CodecConfig::Aac(aac) => Some(aac.channels.to_string()),
            _ => None,
        };
        alternatives.push(AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(format!("{}/{}", audio.name, p.kind.media_playlist())),
            group_id: AUDIO_GROUP.into(),
            name: audio.name.clone(),
            default: true,
            autoselect: true,
            channels,
            ..Default::default()
        });
    }
    let variants = p.videos.iter().map(|video| variant(p, video)).collect();
    let playlist = MasterPlaylist {
        version: Some(7),
        independent_segments: true,
        alternatives,
        variants,
        ..Default::default()
    };
    render(|w| playlist.write_to(w))
}

fn variant(p: &Presentation, video: &Timeline) -> VariantStream {
    let (width, height) = video.codec.video_size().unwrap_or((0, 0));
    let (width, height) = (u64::from(width), u64::from(height));
    let mut codecs = video.codec.codec_string();
    let mut bandwidth = video.peak_bps;
    let mut average = video.average_bps();
    if let Some(audio) = &p.audio {
        codecs = format!("{codecs},{}", audio.codec.codec_string());
        bandwidth += audio.peak_bps;
        average += audio.average_bps();
    }
    VariantStream {
        uri: format!("{}/{}", video.name, p.kind.media_playlist()),
        bandwidth,
        average_bandwidth: Some(average),
        codecs: Some(codecs),
        resolution: Some(Resolution { width, height }),
        frame_rate: measured_frame_rate(p.listed(video), video.timescale),
        audio: p.audio.as_ref().map(|_| AUDIO_GROUP.to_string()),
        ..Default::default()
    }
}

/// Frames per second over `segments`, rounded to 3 decimals (HLS allows that many).
pub fn measured_frame_rate(segments: &[SegmentEntry], timescale: u32) -> Option<f64> {
    let frames: u64 = segments.iter().map(|s| u64::from(s.samples)).sum();
    let ticks: u64 = segments.iter().map(|s| s.duration).sum();
    if frames == 0 || ticks == 0 {
        return None;
    }
    let fps = frames as f64 * f64::from(timescale) / ticks as f64;
    Some((fps * 1000.0).round() / 1000.0)
}

fn render(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; the m3u8-rs API is generic over io::Write.
    let _ = write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
