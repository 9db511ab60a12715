//! MPEG-TS (as SRT carries it) → `StreamEvent`s. Pure: no I/O, no clock of its own.
//!
//! - 188-byte packets in chunks split anywhere (a packet may straddle two `push`es); a lost
//!   sync byte is skipped up to the next `0x47`.
//! - PAT → the first program's PMT → its first video and first audio elementary stream. H.264
//!   (stream type 0x1B), HEVC (0x24) and AAC in ADTS (0x0F) are taken; any other codec of the
//!   program's video or audio (MPEG-2 video, VVC, MP3, AC-3, …) is refused with its name: a
//!   stream that cannot be packaged is better refused than silent.
//! - **Native clock**: PTS/DTS are 33-bit 90 kHz and wrap every ~26.5 h; each track's are
//!   unwrapped to i64 (nearest neighbour modulo 2^33) and stay 90 kHz ticks. A PES's i-th AAC
//!   frame is stamped PTS + round(i · 1024 · 90000 / sample rate), one rounding from the PES's
//!   own time, so nothing accumulates.
//! - **H.264**: one PES is one access unit (what ffmpeg, OBS and GStreamer send). In-band
//!   SPS/PPS build the `AVCDecoderConfigurationRecord` (validated by `AvcConfig::parse`); a
//!   changed one is announced as a new `Track`, identical repeats (before every IDR) are not.
//!   Frames carry 4-byte length-prefixed NAL units without AUD, SPS, PPS and filler (CMAF
//!   `avc1`: the parameter sets live in the config); `sync` = the access unit has an IDR.
//! - **HEVC** the same way: in-band VPS/SPS/PPS build the `HEVCDecoderConfigurationRecord`
//!   (`media::hevc_record`, validated by `HevcConfig::parse`), frames carry length-prefixed NAL
//!   units without AUD and parameter sets (CMAF `hvc1`), `sync` = an IRAP picture (IDR, CRA,
//!   BLA).
//! - **AAC**: every ADTS frame of a PES becomes one raw frame; the AudioSpecificConfig comes
//!   from the ADTS header. An audio PES of known length is emitted as soon as it is complete.
//! - **Configs before frames**: the audio config is known only from the first audio PES, which
//!   muxers often send after the first video frames. When the PMT lists audio, video events are
//!   held (at most `MAX_HELD_VIDEO` bytes or `MAX_HELD_SPAN` of media) until the audio config is
//!   announced, so packaging, which fixes its tracks at the first keyframe, sees both; past the
//!   bound the video goes on alone.
//! - **Continuity**: the 4-bit continuity counter of every packet carrying payload is checked
//!   (one duplicate allowed, the discontinuity indicator resets it); lost packets are counted
//!   in `TsStats`, and a PES that lost one is dropped rather than emitted broken.
//! - **Limits before allocation**: a video PES may hold `MAX_VIDEO_PES` bytes and an audio PES
//!   `MAX_AUDIO_PES`; one that grows past its limit is dropped and counted, never buffered.
//!   Sections larger than one packet are not reassembled (encoders send PAT/PMT in one).
//!
//! Hand-written rather than on `mpeg2ts-reader`: the subset needed (PAT, PMT, PES, ADTS, Annex-B
//! splitting) is small, and owning it keeps every buffer bounded before it grows and the
//! split-anywhere input handled in one place; `tests/fuzz_corpora.rs` replays its fuzz corpus.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{
    hevc_record, AacConfig, AvcConfig, CodecConfig, CodecError, HevcConfig, MediaFrame,
    StreamEvent, Timestamp, TrackInfo, TrackKind,
};

/// One TS packet.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// MPEG-TS's clock.
pub const TIMESCALE: u32 = 90_000;
/// Largest video access unit buffered (a 4K intra frame fits).
pub const MAX_VIDEO_PES: usize = 4 << 20;
/// Largest audio PES buffered (encoders put a few ADTS frames in one).
pub const MAX_AUDIO_PES: usize = 256 << 10;
/// Video held while waiting for the audio config, in bytes and in 90 kHz ticks.
pub const MAX_HELD_VIDEO: usize = 8 << 20;
pub const MAX_HELD_SPAN: i64 = 2 * TIMESCALE as i64;

const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_ADTS_AAC: u8 = 0x0F;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TsError {
    #[error("unsupported {0} codec {1} (MPEG-TS stream type {2:#04x}); Strata accepts H.264, HEVC and AAC over SRT")]
    Unsupported(&'static str, &'static str, u8),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl TsError {
    /// Fatal errors end the broadcast (the stream cannot be packaged).
    pub fn is_fatal(&self) -> bool {
        true
    }
}

/// What the demuxer saw, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TsStats {
    pub packets: u64,
    /// Packets missing by the continuity counters.
    pub lost_packets: u64,
    /// Access units or PES dropped: lost packets, over the size limit, before the config.
    pub dropped_frames: u64,
    /// Bytes skipped looking for a sync byte.
    pub resync_bytes: u64,
}

/// Unwraps a 33-bit wrapping clock into i64 ticks: each value is the nearest neighbour of the
/// previous one modulo 2^33.
#[derive(Debug, Default, Clone)]
struct Unwrap33 {
    last: Option<(u64, i64)>,
}

impl Unwrap33 {
    const MODULUS: i64 = 1 << 33;

    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = raw & (Self::MODULUS as u64 - 1);
        let value = match self.last {
            None => raw as i64,
            Some((last_raw, last_value)) => {
                let mut delta = (raw as i64 - last_raw as i64).rem_euclid(Self::MODULUS);
                if delta >= Self::MODULUS / 2 {
                    delta -= Self::MODULUS;
                }
                last_value + delta
            }
        };
        self.last = Some((raw, value));
        value
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Es {
    Video,
    Audio,
}

#[derive(Debug, Default)]
struct Pes {
    data: BytesMut,
    pts: Option<u64>,
    dts: Option<u64>,
    /// Lost a packet, or grew past its limit: dropped when complete.
    broken: bool,
    /// Payload bytes the PES header announced (0: unbounded, as video usually is).
    expected: usize,
}

#[derive(Debug, Default)]
struct PidState {
    last_cc: Option<u8>,
    duplicate_seen: bool,
    pes: Option<Pes>,
}

/// Demuxes one connection's MPEG-TS.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// The start of a packet split across pushes (< 188 bytes).
    carry: Vec<u8>,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    video: PidState,
    audio: PidState,
    video_clock: Unwrap33,
    video_dts_clock: Unwrap33,
    audio_clock: Unwrap33,
    /// The video elementary stream is HEVC (else H.264), from the PMT.
    hevc: bool,
    video_config: Option<CodecConfig>,
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    aac: Option<AacConfig>,
    /// Video events waiting for the audio config (see the module doc), and their bytes.
    held: Vec<StreamEvent>,
    held_bytes: usize,
    stats: TsStats,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> TsStats {
        self.stats
    }

    /// Takes the next chunk of the stream; returns what it completed.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<StreamEvent>, TsError> {
        let mut out = Vec::new();
        if !self.carry.is_empty() {
            let need = PACKET - self.carry.len();
            let take = need.min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() < PACKET {
                return Ok(out);
            }
            let packet = std::mem::take(&mut self.carry);
            self.packet(&packet, &mut out)?;
        }
        while !bytes.is_empty() {
            if bytes[0] != SYNC {
                let skip = bytes.iter().position(|b| *b == SYNC).unwrap_or(bytes.len());
                self.stats.resync_bytes += skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            if bytes.len() < PACKET {
                self.carry.extend_from_slice(bytes);
                break;
            }
            let (packet, rest) = bytes.split_at(PACKET);
            self.packet(packet, &mut out)?;
            bytes = rest;
        }
        Ok(out)
    }

    /// The end of the stream: emits the access units still being assembled.
    pub fn flush(&mut self) -> Result<Vec<StreamEvent>, TsError> {
        let mut out = Vec::new();
        if let Some(pes) = self.audio.pes.take() {
            self.finish_pes(Es::Audio, pes, &mut out)?;
        }
        if let Some(pes) = self.video.pes.take() {
            self.finish_pes(Es::Video, pes, &mut out)?;
        }
        out.append(&mut self.held);
        self.held_bytes = 0;
        Ok(out)
    }

    /// Emits a video event now, or holds it while the audio config is still to come.
    fn video_event(&mut self, event: StreamEvent, out: &mut Vec<StreamEvent>) {
        let waiting = self.audio_pid.is_some() && self.aac.is_none();
        if !waiting && self.held.is_empty() {
            out.push(event);
            return;
        }
        if let StreamEvent::Frame(f) = &event {
            self.held_bytes += f.data.len();
        }
        self.held.push(event);
        let span = {
            let times = self.held.iter().filter_map(|e| match e {
                StreamEvent::Frame(f) => Some(f.dts.ticks),
                _ => None,
            });
            let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
            hi.saturating_sub(lo)
        };
        if !waiting || self.held_bytes > MAX_HELD_VIDEO || span > MAX_HELD_SPAN {
            self.release_held(out);
        }
    }

    fn release_held(&mut self, out: &mut Vec<StreamEvent>) {
        out.append(&mut self.held);
        self.held_bytes = 0;
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TsError> {
        self.stats.packets += 1;
        let transport_error = p[1] & 0x80 != 0;
        let unit_start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let adaptation = (p[3] >> 4) & 0x03;
        let cc = p[3] & 0x0F;
        if transport_error {
            return Ok(());
        }
        let mut offset = 4;
        let mut discontinuity = false;
        if adaptation & 0x02 != 0 {
            let len = usize::from(p[4]);
            if len > 0 {
                discontinuity = p[5] & 0x80 != 0;
            }
            offset = 5 + len;
        }
        if adaptation & 0x01 == 0 || offset >= PACKET {
            return Ok(()); // no payload
        }
        let payload = &p[offset..];
        if pid == 0 {
            if unit_start {
                self.pat(payload);
            }
            return Ok(());
        }
        if Some(pid) == self.pmt_pid {
            if unit_start {
                self.pmt(payload)?;
            }
            return Ok(());
        }
        let es = if Some(pid) == self.video_pid {
            Es::Video
        } else if Some(pid) == self.audio_pid {
            Es::Audio
        } else {
            return Ok(());
        };
        let state = match es {
            Es::Video => &mut self.video,
            Es::Audio => &mut self.audio,
        };
        // continuity: one duplicate is allowed, the discontinuity indicator resets
        if let Some(last) = state.last_cc {
            if !discontinuity {
                if cc == last {
                    if !state.duplicate_seen {
                        state.duplicate_seen = true;
                        return Ok(());
                    }
                } else {
                    let expected = (last + 1) & 0x0F;
                    let lost = (cc.wrapping_sub(expected) & 0x0F) as u64;
                    if lost > 0 {
                        self.stats.lost_packets += lost;
                        if let Some(pes) = state.pes.as_mut() {
                            pes.broken = true;
                        }
                    }
                }
            }
        }
        state.last_cc = Some(cc);
        state.duplicate_seen = false;
        if unit_start {
            if let Some(pes) = state.pes.take() {
                self.finish_pes(es, pes, out)?;
            }
            let pes = start_pes(payload);
            if pes.expected > 0 && pes.data.len() >= pes.expected {
                self.finish_pes(es, pes, out)?;
            } else {
                let state = match es {
                    Es::Video => &mut self.video,
                    Es::Audio => &mut self.audio,
                };
                state.pes = Some(pes);
            }
            return Ok(());
        }
        let limit = match es {
            Es::Video => MAX_VIDEO_PES,
            Es::Audio => MAX_AUDIO_PES,
        };
        if let Some(pes) = state.pes.as_mut() {
            if pes.data.len() + payload.len() > limit {
                pes.broken = true;
                pes.data = BytesMut::new();
            } else if !pes.broken {
                pes.data.extend_from_slice(payload);
            }
            if pes.expected > 0 && pes.data.len() >= pes.expected {
                if let Some(pes) = state.pes.take() {
                    self.finish_pes(es, pes, out)?;
                }
            }
        }
        Ok(())
    }

    /// The PAT: the first program's PMT PID.
    fn pat(&mut self, payload: &[u8]) {
        let Some(section) = section(payload) else {
            return;
        };
        // after the 8-byte section header: program_number(16) + PID(13) entries, then CRC
        let Some(entries) = section.get(8..section.len().saturating_sub(4)) else {
            return;
        };
        for entry in entries.chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some((u16::from(entry[2] & 0x1F) << 8) | u16::from(entry[3]));
                return;
            }
        }
    }

    /// The PMT: the first video and the first audio stream; refuses codecs Strata cannot
    /// package.
    fn pmt(&mut self, payload: &[u8]) -> Result<(), TsError> {
        let Some(section) = section(payload) else {
            return Ok(());
        };
        let Some(info_len) = section.get(10..12) else {
            return Ok(());
        };
        let info_len = usize::from(u16::from_be_bytes([info_len[0], info_len[1]]) & 0x0FFF);
        let end = section.len().saturating_sub(4);
        let mut at = 12 + info_len;
        while at + 5 <= end {
            let stream_type = section[at];
            let pid = (u16::from(section[at + 1] & 0x1F) << 8) | u16::from(section[at + 2]);
            let es_info =
                usize::from(u16::from_be_bytes([section[at + 3], section[at + 4]]) & 0x0FFF);
            at += 5 + es_info;
            match (stream_type, codec_of(stream_type)) {
                (STREAM_TYPE_H264 | STREAM_TYPE_HEVC, _) if self.video_pid.is_none() => {
                    self.video_pid = Some(pid);
                    self.hevc = stream_type == STREAM_TYPE_HEVC;
                }
                (STREAM_TYPE_ADTS_AAC, _) if self.audio_pid.is_none() => self.audio_pid = Some(pid),
                (_, Some(("video", name))) if self.video_pid.is_none() => {
                    return Err(TsError::Unsupported("video", name, stream_type))
                }
                (_, Some(("audio", name))) if self.audio_pid.is_none() => {
                    return Err(TsError::Unsupported("audio", name, stream_type))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finish_pes(&mut self, es: Es, pes: Pes, out: &mut Vec<StreamEvent>) -> Result<(), TsError> {
        if pes.broken {
            self.stats.dropped_frames += 1;
            return Ok(());
        }
        let Some(pts) = pes.pts else {
            self.stats.dropped_frames += 1;
            return Ok(());
        };
        let data = pes.data.freeze();
        match es {
            Es::Video => {
                let pts = self.video_clock.unwrap(pts);
                let dts = pes.dts.map_or(pts, |dts| self.video_dts_clock.unwrap(dts));
                self.video_frame(data, dts, pts, out)
            }
            Es::Audio => {
                let pts = self.audio_clock.unwrap(pts);
                self.audio_frames(&data, pts, out)
            }
        }
    }

    fn video_frame(
        &mut self,
        annex_b: Bytes,
        dts: i64,
        pts: i64,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TsError> {
        let mut sync = false;
        let mut sample = BytesMut::with_capacity(annex_b.len() + 16);
        let (mut vps, mut sps, mut pps) = (None, None, None);
        for nal in nal_units(&annex_b) {
            match NalKind::of(nal, self.hevc) {
                NalKind::Vps => vps = Some(annex_b.slice_ref(nal)),
                NalKind::Sps => sps = Some(annex_b.slice_ref(nal)),
                NalKind::Pps => pps = Some(annex_b.slice_ref(nal)),
                NalKind::Skipped => {}
                NalKind::Picture { random_access } => {
                    sync |= random_access;
                    sample.put_u32(nal.len() as u32);
                    sample.extend_from_slice(nal);
                }
            }
        }
        let changed = (vps.is_some() && vps != self.vps)
            || (sps.is_some() && sps != self.sps)
            || (pps.is_some() && pps != self.pps);
        for (new, slot) in [
            (vps, &mut self.vps),
            (sps, &mut self.sps),
            (pps, &mut self.pps),
        ] {
            if new.is_some() {
                *slot = new;
            }
        }
        if changed {
            if let Some(config) = self.config_from_parameter_sets()? {
                if self.video_config.as_ref() != Some(&config) {
                    self.video_config = Some(config.clone());
                    let track = StreamEvent::Track(TrackInfo {
                        kind: TrackKind::Video,
                        codec: config,
                    });
                    self.video_event(track, out);
                }
            }
        }
        if sample.is_empty() {
            return Ok(());
        }
        if self.video_config.is_none() {
            self.stats.dropped_frames += 1;
            return Ok(());
        }
        let frame = StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::new(dts, TIMESCALE),
            pts: Timestamp::new(pts, TIMESCALE),
            sync,
            segment_start: false,
            data: sample.freeze(),
        });
        self.video_event(frame, out);
        Ok(())
    }

    /// The configuration the latest parameter sets make, once all of them were seen.
    fn config_from_parameter_sets(&self) -> Result<Option<CodecConfig>, TsError> {
        Ok(match (&self.vps, &self.sps, &self.pps, self.hevc) {
            (_, Some(sps), Some(pps), false) => {
                Some(CodecConfig::Avc(AvcConfig::parse(avc_record(sps, pps))?))
            }
            (Some(vps), Some(sps), Some(pps), true) => Some(CodecConfig::Hevc(HevcConfig::parse(
                hevc_record(vps, sps, pps)?,
            )?)),
            _ => None,
        })
    }

    fn audio_frames(
        &mut self,
        mut data: &[u8],
        pts: i64,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TsError> {
        let mut index = 0i64;
        while data.len() >= 7 {
            if data[0] != 0xFF || data[1] & 0xF0 != 0xF0 {
                self.stats.dropped_frames += 1;
                return Ok(()); // not ADTS: the rest of this PES is unusable
            }
            let protection_absent = data[1] & 0x01 != 0;
            let profile = (data[2] >> 6) & 0x03;
            let frequency = (data[2] >> 2) & 0x0F;
            let channels = ((data[2] & 0x01) << 2) | (data[3] >> 6);
            let frame_len = (usize::from(data[3] & 0x03) << 11)
                | (usize::from(data[4]) << 3)
                | usize::from(data[5] >> 5);
            let header = if protection_absent { 7 } else { 9 };
            if frame_len <= header || frame_len > data.len() {
                self.stats.dropped_frames += 1;
                return Ok(());
            }
            let asc = ((u16::from(profile) + 1) << 11)
                | (u16::from(frequency) << 7)
                | (u16::from(channels) << 3);
            let config = match &self.aac {
                Some(c) if c.asc[..] == asc.to_be_bytes() => c.clone(),
                _ => {
                    let config = AacConfig::parse(Bytes::copy_from_slice(&asc.to_be_bytes()))?;
                    self.aac = Some(config.clone());
                    out.push(StreamEvent::Track(TrackInfo {
                        kind: TrackKind::Audio,
                        codec: CodecConfig::Aac(config.clone()),
                    }));
                    // the video held for this config follows it
                    self.release_held(out);
                    config
                }
            };
            let rate = i64::from(config.sample_rate.max(1));
            let offset = (index * 1024 * i64::from(TIMESCALE) + rate / 2) / rate;
            let ts = Timestamp::new(pts + offset, TIMESCALE);
            out.push(StreamEvent::Frame(MediaFrame {
                kind: TrackKind::Audio,
                dts: ts,
                pts: ts,
                sync: true,
                segment_start: false,
                data: Bytes::copy_from_slice(&data[header..frame_len]),
            }));
            index += 1;
            data = &data[frame_len..];
        }
        Ok(())
    }
}

/// A PES's start: its header's timestamps, and the payload so far.
fn start_pes(payload: &[u8]) -> Pes {
    let broken = Pes {
        broken: true,
        ..Pes::default()
    };
    // PES_packet_length counts from after its own field: 3 bytes of flags and the header
    let announced = payload
        .get(4..6)
        .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return broken;
    }
    let flags = payload[7] >> 6;
    let header_len = usize::from(payload[8]);
    let Some(data) = payload.get(9 + header_len..) else {
        return broken;
    };
    let pts = (flags & 0x02 != 0)
        .then(|| payload.get(9..14).map(timestamp))
        .flatten();
    let dts = (flags == 0x03)
        .then(|| payload.get(14..19).map(timestamp))
        .flatten();
    Pes {
        data: BytesMut::from(data),
        pts,
        dts,
        broken: false,
        expected: announced.saturating_sub(3 + header_len),
    }
}

/// A 33-bit PES timestamp from its 5 bytes.
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | (u64::from(b[2]) >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4]) >> 1
}

/// The PSI section a payload starts (after its pointer field), bounded by its length.
fn section(payload: &[u8]) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let section = payload.get(1 + pointer..)?;
    let len = usize::from(u16::from_be_bytes([*section.get(1)?, *section.get(2)?]) & 0x0FFF);
    section.get(..3 + len)
}

fn codec_of(stream_type: u8) -> Option<(&'static str, &'static str)> {
    Some(match stream_type {
        0x01 | 0x02 => ("video", "MPEG-2 video"),
        0x10 => ("video", "MPEG-4 Part 2"),
        0x33 => ("video", "VVC"),
        0x03 | 0x04 => ("audio", "MPEG audio (MP2/MP3)"),
        0x11 => ("audio", "AAC in LATM"),
        0x81 => ("audio", "AC-3"),
        0x87 => ("audio", "E-AC-3"),
        _ => return None,
    })
}

/// What a NAL unit is to the demuxer, for H.264 (1-byte header) or HEVC (2-byte header).
enum NalKind {
    Vps,
    Sps,
    Pps,
    /// Access unit delimiters, filler (and, for HEVC, nothing else): not part of a sample.
    Skipped,
    /// Everything else goes into the sample; `random_access` for IDR (H.264) or IRAP (HEVC).
    Picture {
        random_access: bool,
    },
}

impl NalKind {
    fn of(nal: &[u8], hevc: bool) -> Self {
        if hevc {
            match (nal[0] >> 1) & 0x3F {
                32 => NalKind::Vps,
                33 => NalKind::Sps,
                34 => NalKind::Pps,
                35 | 38 => NalKind::Skipped, // AUD, filler
                kind => NalKind::Picture {
                    random_access: (16..=21).contains(&kind),
                },
            }
        } else {
            match nal[0] & 0x1F {
                7 => NalKind::Sps,
                8 => NalKind::Pps,
                9 | 12 => NalKind::Skipped,
                kind => NalKind::Picture {
                    random_access: kind == 5,
                },
            }
        }
    }
}

/// The NAL units of an Annex-B access unit (start codes and trailing zero bytes removed).
fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| s - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| {
            let mut nal = &data[s..e.max(s)];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            nal
        })
        .filter(|nal| !nal.is_empty())
}

/// An `AVCDecoderConfigurationRecord` for one SPS and one PPS (4-byte NAL lengths).
pub(crate) fn avc_record(sps: &[u8], pps: &[u8]) -> Bytes {
    let mut record = BytesMut::with_capacity(11 + sps.len() + pps.len());
    record.put_u8(1);
    record.put_u8(sps.get(1).copied().unwrap_or(0));
    record.put_u8(sps.get(2).copied().unwrap_or(0));
    record.put_u8(sps.get(3).copied().unwrap_or(0));
    record.put_u8(0xFF); // lengthSizeMinusOne = 3
    record.put_u8(0xE1); // one SPS
    record.put_u16(sps.len().min(u16::MAX as usize) as u16);
    record.extend_from_slice(&sps[..sps.len().min(u16::MAX as usize)]);
    record.put_u8(1);
    record.put_u16(pps.len().min(u16::MAX as usize) as u16);
    record.extend_from_slice(&pps[..pps.len().min(u16::MAX as usize)]);
    record.freeze()
}

#[cfg(test)]
mod tests;
