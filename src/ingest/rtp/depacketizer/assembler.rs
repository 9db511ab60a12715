//! Payloads in sequence order → NAL units → access units → `StreamEvent`s, with the clock:
//! the RFC 6184 half of the depacketizer (the parent module's doc states the rules).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Output, RtpStats, MAX_ACCESS_UNIT, MAX_NAL_UNITS, MAX_TIMESTAMP_JUMP, TIMESCALE};
use crate::ingest::mpegts::avc_record;
use crate::ingest::rtp::packet::RtpPacket;
use crate::media::{
    AvcConfig, CodecConfig, MediaFrame, StreamEvent, Timestamp, TrackInfo, TrackKind,
};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;
/// The frame interval assumed before two frames were seen (30 fps).
const DEFAULT_INTERVAL: i64 = TIMESCALE as i64 / 30;

/// Why an access unit cannot be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The sender's fault (a fragment or aggregate that does not add up): counted malformed,
    /// reported as a loss so a keyframe is asked for.
    Malformed,
    /// Over `MAX_ACCESS_UNIT` or `MAX_NAL_UNITS`.
    Oversize,
    /// Packets of it were lost (already reported).
    Lost,
}

/// A fragmented NAL unit being reassembled in place: its 4-byte length is at `offset` in the
/// access unit's data and patched when the end arrives.
#[derive(Debug)]
struct Fragmented {
    nal_type: u8,
    offset: usize,
}

#[derive(Debug)]
struct AccessUnit {
    timestamp: u32,
    pts: i64,
    /// Length-prefixed NAL units of the frame so far.
    data: BytesMut,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    nal_units: usize,
    idr: bool,
    fu: Option<Fragmented>,
    broken: Option<Broken>,
}

impl AccessUnit {
    fn size(&self) -> usize {
        self.data.len()
            + self.sps.as_ref().map_or(0, Bytes::len)
            + self.pps.as_ref().map_or(0, Bytes::len)
    }

    /// Whether `more` bytes of frame data still fit.
    fn fits(&self, more: usize) -> bool {
        self.size().saturating_add(more) <= MAX_ACCESS_UNIT
    }

    /// Counts one more NAL unit, checking that `bytes` of it fit.
    fn start_nal(&mut self, bytes: usize) -> Result<(), Broken> {
        self.nal_units += 1;
        if self.nal_units > MAX_NAL_UNITS || !self.fits(bytes) {
            return Err(Broken::Oversize);
        }
        Ok(())
    }

    /// One whole NAL unit.
    fn add_nal(&mut self, nal: &[u8]) -> Result<(), Broken> {
        let Some(&header) = nal.first() else {
            return Err(Broken::Malformed);
        };
        match header & 0x1F {
            NAL_SPS => {
                self.start_nal(nal.len())?;
                self.sps = Some(Bytes::copy_from_slice(nal));
            }
            NAL_PPS => {
                self.start_nal(nal.len())?;
                self.pps = Some(Bytes::copy_from_slice(nal));
            }
            NAL_AUD | NAL_FILLER => self.start_nal(0)?,
            kind => {
                self.start_nal(4 + nal.len())?;
                self.data.put_u32(nal.len() as u32);
                self.data.extend_from_slice(nal);
                self.idr |= kind == NAL_IDR;
            }
        }
        Ok(())
    }

    /// The end of a fragmented NAL unit: its length patched in, or moved out if it is a
    /// parameter set (or dropped if it is an AUD or filler).
    fn end_fu(&mut self) {
        let Some(fu) = self.fu.take() else {
            return;
        };
        let start = fu.offset + 4;
        let len = self.data.len().saturating_sub(start);
        match fu.nal_type {
            NAL_SPS | NAL_PPS => {
                let nal = Bytes::copy_from_slice(self.data.get(start..).unwrap_or_default());
                if fu.nal_type == NAL_SPS {
                    self.sps = Some(nal);
                } else {
                    self.pps = Some(nal);
                }
                self.data.truncate(fu.offset);
            }
            NAL_AUD | NAL_FILLER => self.data.truncate(fu.offset),
            kind => {
                if let Some(slot) = self.data.get_mut(fu.offset..start) {
                    slot.copy_from_slice(&(len as u32).to_be_bytes());
                }
                self.idr |= kind == NAL_IDR;
            }
        }
    }

    /// Marks the access unit broken and frees what it held.
    fn break_off(&mut self, why: Broken) {
        if self.broken.is_none() {
            self.broken = Some(why);
        }
        self.data = BytesMut::new();
        self.sps = None;
        self.pps = None;
        self.fu = None;
    }
}

/// Assembles access units from payloads in sequence order; owns the config and the clock.
#[derive(Debug)]
pub(super) struct Assembler {
    au: Option<AccessUnit>,
    /// Since a gap: FU-A fragments without their start are its consequence, already reported.
    orphans_expected: bool,
    /// Frames are dropped until an IDR (at the start, after a loss or a restart).
    need_sync: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    config: Option<CodecConfig>,
    /// The last RTP timestamp unwrapped and its value in ticks.
    clock: Option<(u32, i64)>,
    /// The last access unit's pts, and the last positive step between two (up to 1 s).
    last_pts: Option<i64>,
    interval: i64,
    last_dts: Option<i64>,
}

impl Assembler {
    pub(super) fn new() -> Self {
        Self {
            au: None,
            orphans_expected: false,
            need_sync: true,
            sps: None,
            pps: None,
            config: None,
            clock: None,
            last_pts: None,
            interval: DEFAULT_INTERVAL,
            last_dts: None,
        }
    }

    /// The next packet in sequence order.
    pub(super) fn packet(
        &mut self,
        packet: &RtpPacket<'_>,
        out: &mut Vec<Output>,
        stats: &mut RtpStats,
    ) {
        if self
            .au
            .as_ref()
            .is_some_and(|au| au.timestamp != packet.timestamp)
        {
            self.finish(false, out, stats);
        }
        if self.au.is_none() {
            let jumped = self.clock.is_some_and(|(last, _)| {
                (packet.timestamp.wrapping_sub(last) as i32).unsigned_abs() > MAX_TIMESTAMP_JUMP
            });
            if jumped {
                // the device restarted its encoder on the same sequence numbers (or was silent
                // for longer than any gap the reorder window gives up): a new timeline
                stats.clock_jumps += 1;
                self.need_sync = true;
                self.rebase(packet.timestamp, out);
            }
            let pts = self.unwrap_clock(packet.timestamp);
            self.au = Some(AccessUnit {
                timestamp: packet.timestamp,
                pts,
                data: BytesMut::new(),
                sps: None,
                pps: None,
                nal_units: 0,
                idr: false,
                fu: None,
                broken: None,
            });
        }
        if let Err(why) = self.payload(packet.payload, stats) {
            self.break_au(why, out, stats);
        }
        if packet.marker {
            self.finish(false, out, stats);
        }
    }

    /// `lost` sequence numbers are missing before the next packet.
    pub(super) fn gap(&mut self, lost: u64, out: &mut Vec<Output>, stats: &mut RtpStats) {
        stats.lost += lost;
        out.push(Output::Loss { packets: lost });
        self.need_sync = true;
        self.orphans_expected = true;
        if let Some(au) = self.au.as_mut() {
            au.break_off(Broken::Lost);
        }
    }

    /// The source restarted: the access unit in progress ends as at the end of the stream,
    /// and with `rebase` (the new source's first RTP timestamp) the clock continues one frame
    /// interval after the last frame, announced by `Output::Discontinuity`.
    pub(super) fn restart(
        &mut self,
        rebase: Option<u32>,
        out: &mut Vec<Output>,
        stats: &mut RtpStats,
    ) {
        self.end(out, stats);
        self.need_sync = true;
        self.orphans_expected = false;
        if let Some(timestamp) = rebase {
            self.rebase(timestamp, out);
        }
    }

    /// A new timeline starts at RTP `timestamp`: the clock continues one frame interval after
    /// the last frame, announced by `Output::Discontinuity`.
    fn rebase(&mut self, timestamp: u32, out: &mut Vec<Output>) {
        out.push(Output::Discontinuity);
        let last = match (self.last_pts, self.last_dts) {
            (Some(pts), Some(dts)) => Some(pts.max(dts)),
            (pts, dts) => pts.or(dts),
        };
        let base = last.map_or(0, |last| last.saturating_add(self.interval));
        self.clock = Some((timestamp, base));
        self.last_pts = None;
    }

    /// The end of the stream: the access unit in progress is emitted if no fragment of it is
    /// missing its end.
    pub(super) fn end(&mut self, out: &mut Vec<Output>, stats: &mut RtpStats) {
        self.finish(true, out, stats);
    }

    /// The NAL units of one payload into the access unit in progress.
    fn payload(&mut self, payload: &[u8], stats: &mut RtpStats) -> Result<(), Broken> {
        let orphans_expected = std::mem::take(&mut self.orphans_expected);
        let Some(au) = self.au.as_mut() else {
            return Ok(());
        };
        if au.broken.is_some() {
            return Ok(()); // the rest of a dropped access unit
        }
        let Some(&header) = payload.first() else {
            stats.malformed += 1;
            return Ok(());
        };
        let kind = header & 0x1F;
        if kind != FU_A && au.fu.is_some() {
            return Err(Broken::Malformed); // a fragmented NAL unit without its end
        }
        match kind {
            1..=23 => au.add_nal(payload),
            STAP_A => {
                let units = stap_a_units(&payload[1..]).ok_or(Broken::Malformed)?;
                for nal in units {
                    au.add_nal(nal)?;
                }
                Ok(())
            }
            FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    return Err(Broken::Malformed);
                };
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                let nal_type = fu_header & 0x1F;
                let fragment = &payload[2..];
                if start {
                    if au.fu.is_some() || !(1..=23).contains(&nal_type) {
                        return Err(Broken::Malformed);
                    }
                    au.start_nal(4 + 1 + fragment.len())?;
                    let offset = au.data.len();
                    au.data.put_u32(0);
                    au.data.put_u8((header & 0xE0) | nal_type);
                    au.fu = Some(Fragmented { nal_type, offset });
                } else {
                    match &au.fu {
                        None if orphans_expected => {
                            self.orphans_expected = true;
                            return Err(Broken::Lost);
                        }
                        Some(fu) if fu.nal_type == nal_type => {}
                        _ => return Err(Broken::Malformed),
                    }
                    if !au.fits(fragment.len()) {
                        return Err(Broken::Oversize);
                    }
                }
                au.data.extend_from_slice(fragment);
                if end {
                    au.end_fu();
                }
                Ok(())
            }
            // STAP-B, MTAP16, MTAP24, FU-B (interleaved mode) and the unassigned types
            _ => {
                stats.malformed += 1;
                Ok(())
            }
        }
    }

    fn break_au(&mut self, why: Broken, out: &mut Vec<Output>, stats: &mut RtpStats) {
        let Some(au) = self.au.as_mut() else {
            return;
        };
        if au.broken.is_none() && why == Broken::Malformed {
            stats.malformed += 1;
            out.push(Output::Loss { packets: 0 });
        }
        au.break_off(why);
        self.need_sync = true;
    }

    /// Ends the access unit in progress: by its marker or a new timestamp, or (`end_of_stream`)
    /// because nothing follows.
    fn finish(&mut self, end_of_stream: bool, out: &mut Vec<Output>, stats: &mut RtpStats) {
        if self.au.as_ref().is_some_and(|au| au.fu.is_some()) {
            if end_of_stream {
                if let Some(au) = self.au.as_mut() {
                    au.break_off(Broken::Lost);
                }
            } else {
                self.break_au(Broken::Malformed, out, stats);
            }
        }
        let Some(au) = self.au.take() else {
            return;
        };
        if au.broken.is_some() {
            stats.dropped_frames += 1;
            self.need_sync = true;
            return;
        }
        if au.sps.is_some() || au.pps.is_some() {
            let previous = (self.sps.clone(), self.pps.clone());
            let changed = (au.sps.is_some() && au.sps != self.sps)
                || (au.pps.is_some() && au.pps != self.pps);
            self.sps = au.sps.or(self.sps.take());
            self.pps = au.pps.or(self.pps.take());
            if changed {
                if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
                    match AvcConfig::parse(avc_record(sps, pps)) {
                        Ok(config) => {
                            let config = CodecConfig::Avc(config);
                            if self.config.as_ref() != Some(&config) {
                                self.config = Some(config.clone());
                                out.push(Output::Event(StreamEvent::Track(TrackInfo {
                                    kind: TrackKind::Video,
                                    codec: config,
                                })));
                            }
                        }
                        Err(_) => {
                            // forgotten, so the same sets are tried (and refused) again
                            (self.sps, self.pps) = previous;
                            stats.malformed += 1;
                            if !au.data.is_empty() {
                                stats.dropped_frames += 1;
                            }
                            self.need_sync = true;
                            return;
                        }
                    }
                }
            }
        }
        if au.data.is_empty() {
            return; // parameter sets (or delimiters) alone
        }
        if self.config.is_none() || (self.need_sync && !au.idr) {
            stats.dropped_frames += 1;
            return;
        }
        self.need_sync = false;
        if au.idr {
            stats.keyframes += 1;
        }
        let dts = match self.last_dts {
            Some(last) if au.pts <= last => last.saturating_add(1),
            _ => au.pts,
        };
        self.last_dts = Some(dts);
        // a clock that steps back (a device without B-frames never does) must not make a
        // frame presented before it is decoded
        let pts = au.pts.max(dts);
        out.push(Output::Event(StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::new(dts, TIMESCALE),
            pts: Timestamp::new(pts, TIMESCALE),
            sync: au.idr,
            segment_start: false,
            data: au.data.freeze(),
        })));
    }

    /// An access unit's RTP timestamp in ticks: the nearest neighbour of the previous one
    /// modulo 2^32, the first at 0.
    fn unwrap_clock(&mut self, raw: u32) -> i64 {
        let value = match self.clock {
            None => 0,
            Some((last_raw, last)) => {
                last.saturating_add(i64::from(raw.wrapping_sub(last_raw) as i32))
            }
        };
        self.clock = Some((raw, value));
        if let Some(last) = self.last_pts {
            let step = value.saturating_sub(last);
            if step > 0 && step <= i64::from(TIMESCALE) {
                self.interval = step;
            }
        }
        self.last_pts = Some(value);
        value
    }
}

/// The NAL units of a STAP-A after its header, if every 16-bit size is non-zero and fits and
/// every unit is a plain NAL unit (aggregates and fragments do not nest).
fn stap_a_units(mut rest: &[u8]) -> Option<Vec<&[u8]>> {
    let mut units = Vec::new();
    while !rest.is_empty() {
        let (size, after) = rest.split_first_chunk::<2>()?;
        let size = usize::from(u16::from_be_bytes(*size));
        if size == 0 || size > after.len() || units.len() >= MAX_NAL_UNITS {
            return None;
        }
        let (nal, after) = after.split_at(size);
        if !nal.first().is_some_and(|h| (1..=23).contains(&(h & 0x1F))) {
            return None;
        }
        units.push(nal);
        rest = after;
    }
    (!units.is_empty()).then_some(units)
}
