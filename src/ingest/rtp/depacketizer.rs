//! H.264 in RTP (RFC 6184, packetization modes 0 and 1) → `StreamEvent`s. Pure: no I/O, no
//! clock of its own; the UDP shell filters packets by source and SSRC, parses them
//! (`super::packet`) and feeds them here in arrival order.
//!
//! - **Sequence numbers** are 16-bit and wrap; they are extended to 64 bits (RFC 3550 A.1
//!   style: each is the nearest neighbour of the next expected one). A packet of another payload
//!   type than the announced one is dropped and counted (`wrong_payload_type`).
//! - **Bounded reordering**: packets ahead of the next expected one are held, copied, in a
//!   buffer of at most `REORDER_PACKETS` sequence numbers past the gap and `REORDER_BYTES`
//!   bytes. A gap is given up when the buffer holds more than `REORDER_WINDOW` packets, a packet
//!   arrives more than `REORDER_PACKETS` past it, or the bytes would pass `REORDER_BYTES`: the
//!   missing packets are counted (`lost`), `Output::Loss` is emitted once for the gap, and the
//!   buffer drains in order. Between two calls the buffer never holds more than
//!   `REORDER_WINDOW` packets, so never more than `REORDER_WINDOW · MAX_DATAGRAM` bytes (the
//!   byte bound holds by construction and is checked anyway). Duplicates are dropped and
//!   counted (`duplicates`); a packet older than the next expected one that was never
//!   delivered arrived after its gap was given up (`late`), dropped too.
//! - **Restarts**: a sequence number more than `MAX_JUMP` ahead of the next expected one or
//!   more than `MAX_MISORDER` behind it is held on probation (RFC 3550 A.1's `bad_seq`): a lone stray packet is
//!   dropped (`malformed`), but when the next packet lies within `REORDER_PACKETS` of it the
//!   source restarted. What the buffer holds is released, the access unit in progress ends,
//!   the sequence resyncs on the new numbers and the next frame must be a keyframe. If the RTP
//!   timestamp also jumped by more than `MAX_TIMESTAMP_JUMP` either way, `Output::Discontinuity`
//!   comes first and the clock is rebased to continue one frame interval after the last frame.
//!   A timestamp that jumps that far with the sequence going on (an encoder restarted without
//!   its sequence moving far) is a discontinuity too: rebased, and frames wait for an IDR.
//! - **Payloads**: single NAL unit packets (types 1–23), STAP-A (24; every 16-bit size checked
//!   against what is left before anything is taken) and FU-A (28; S/E bits, the fragment type
//!   must stay the same). STAP-B, MTAP16/24 and FU-B (25–27, 29; interleaved mode, never
//!   offered) and types 0, 30, 31 are dropped and counted (`malformed`).
//! - **Access units** are the NAL units sharing one RTP timestamp; one ends on the marker bit,
//!   or when a packet with another timestamp arrives. Each is bounded, as it grows, to
//!   `MAX_ACCESS_UNIT` bytes and `MAX_NAL_UNITS` NAL units: past either it is freed and dropped
//!   (`dropped_frames`). A fragmented NAL unit missing its start, its end or a middle
//!   fragment, or a STAP-A whose sizes do not add up, breaks its access unit: dropped,
//!   `malformed`, and `Output::Loss { packets: 0 }` so the device is asked for a keyframe
//!   (fragments orphaned by a gap already reported are not counted twice).
//! - **Frames exactly as `ingest::mpegts` emits H.264**: in-band SPS/PPS build the
//!   `AVCDecoderConfigurationRecord` (`mpegts::avc_record`, validated by `AvcConfig::parse`; a
//!   set that does not parse drops its access unit and is counted `malformed`, nothing ends); a
//!   changed config is announced as a new `Track` before its frame, identical repeats are not.
//!   Frames carry 4-byte length-prefixed NAL units without AUD, SPS, PPS and filler; SEI stays;
//!   `sync` = the access unit has an IDR; `segment_start` is never set.
//! - **Native clock**: the 32-bit RTP timestamp is unwrapped (nearest neighbour modulo 2^32) to
//!   i64 90 kHz ticks counted from the first packet's, so a stream starting on its keyframe
//!   starts at 0. RTP carries presentation time only: `pts` is that, `dts` is `pts` unless
//!   that would not be strictly after the previous frame's `dts`, then that plus one tick
//!   (devices do not send B-frames; decode order stays strictly increasing regardless).
//! - **A broken GOP is never handed on**: at the start, after any loss, broken or dropped
//!   access unit and after a restart, access units are dropped (`dropped_frames`) until one
//!   has an IDR and a known config. Access units before the first SPS+PPS are dropped too.
//!
//! Hand-written rather than on a crate: webrtc-rs's `rtp` (and its `rtc-rtp` fork) and str0m
//! depacketize one packet at a time into Annex-B and leave sequence order, loss, reordering
//! and access-unit bounds to the caller; retina does all of it but inside its RTSP client
//! session (and drops out-of-order packets rather than reordering them). None gives a
//! bounded reorder buffer, loss reports that drive keyframe requests, and CMAF-ready frames;
//! what is needed on top of RFC 6184's three payload shapes is exactly this module.

mod assembler;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::packet::RtpPacket;
use crate::media::StreamEvent;
use assembler::Assembler;

/// The RTP clock of H.264 (RFC 6184 §8.2.1).
pub const TIMESCALE: u32 = 90_000;
/// Sequence numbers a packet may be held ahead of a gap before the gap is given up.
pub const REORDER_PACKETS: u64 = 64;
/// Bytes of payload the reorder buffer may hold.
pub const REORDER_BYTES: usize = 256 << 10;
/// Packets held past a gap before it is declared lost.
pub const REORDER_WINDOW: usize = 24;
/// A sequence number more than this ahead of the next expected one is a restart of the source
/// (RFC 3550 A.1's `MAX_DROPOUT`)…
pub const MAX_JUMP: u16 = 3000;
/// …and so is one more than this behind it (`MAX_MISORDER`): an encoder restarted on the same
/// port may begin just below where the last one ended.
pub const MAX_MISORDER: u16 = 100;
/// An RTP timestamp jump larger than this (10 s), either way, at a restart is a discontinuity.
pub const MAX_TIMESTAMP_JUMP: u32 = 10 * TIMESCALE;
/// Largest access unit assembled, in frame bytes (a 4K intra frame fits).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;
/// Most NAL units in one access unit.
pub const MAX_NAL_UNITS: usize = 256;

/// How many delivered sequence numbers are remembered to tell duplicates from late packets.
const HISTORY: u64 = 128;
/// Where extended sequence numbers start, so one 3000 below the first stays positive.
const BASE: u64 = 1 << 32;

/// What the depacketizer tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Event(StreamEvent),
    /// Packets were lost (a gap that the reorder window did not fill; `packets: 0` for a broken
    /// FU-A or STAP-A with no sequence number missing): the caller asks the device for a
    /// keyframe. Frames resume at the next IDR.
    Loss {
        packets: u64,
    },
    /// The source restarted (sequence and timestamp jumped far): the caller calls
    /// `Broadcast::discontinuity()` before the following events; the next frame is a keyframe.
    Discontinuity,
}

/// What the depacketizer saw, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtpStats {
    /// Packets pushed (of any payload type) and their payload bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Sequence numbers given up as missing.
    pub lost: u64,
    /// Packets that arrived out of order but in time (filling a gap).
    pub reordered: u64,
    pub duplicates: u64,
    /// Packets that arrived after their gap was given up (or too old to tell).
    pub late: u64,
    pub wrong_payload_type: u64,
    /// Payloads RFC 6184 mode 0/1 does not allow, broken fragments and aggregates, parameter
    /// sets that do not parse, stray packets far out of sequence.
    pub malformed: u64,
    /// Access units dropped: broken, over a limit, before the config, waiting for a keyframe.
    pub dropped_frames: u64,
    /// Keyframes (IDR access units) emitted.
    pub keyframes: u64,
    /// Restarts of the source (sequence resyncs).
    pub restarts: u64,
    /// RTP timestamps that jumped more than `MAX_TIMESTAMP_JUMP` with the sequence going on:
    /// a new timeline (`Output::Discontinuity`).
    pub clock_jumps: u64,
}

/// A packet held for reordering or on probation: its payload copied out of the datagram.
#[derive(Debug)]
struct Held {
    sequence: u16,
    marker: bool,
    timestamp: u32,
    payload: Vec<u8>,
}

impl Held {
    fn of(packet: &RtpPacket<'_>) -> Self {
        Held {
            sequence: packet.sequence,
            marker: packet.marker,
            timestamp: packet.timestamp,
            payload: packet.payload.to_vec(),
        }
    }

    fn as_packet(&self) -> RtpPacket<'_> {
        RtpPacket {
            marker: self.marker,
            payload_type: 0,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: 0,
            payload: &self.payload,
        }
    }
}

/// Depacketizes one source's H.264 RTP stream (one SSRC, already filtered by the caller).
#[derive(Debug)]
pub struct H264Depacketizer {
    payload_type: u8,
    /// The next extended sequence number to deliver; `None` before the first packet.
    next: Option<u64>,
    /// Which of the `HISTORY` sequence numbers before `next` were delivered (bit 0: next - 1).
    delivered: u128,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// A packet far out of sequence, waiting for a successor to confirm a restart.
    probation: Option<Held>,
    /// The RTP timestamp of the last packet delivered.
    last_timestamp: Option<u32>,
    assembler: Assembler,
    stats: RtpStats,
}

impl H264Depacketizer {
    /// A depacketizer for the dynamic payload type the device announced.
    pub fn new(payload_type: u8) -> Self {
        Self {
            payload_type,
            next: None,
            delivered: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            probation: None,
            last_timestamp: None,
            assembler: Assembler::new(),
            stats: RtpStats::default(),
        }
    }

    pub fn stats(&self) -> RtpStats {
        self.stats
    }

    /// Packets in the reorder buffer (at most `REORDER_WINDOW` between calls).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Payload bytes in the reorder buffer (at most `REORDER_BYTES` between calls).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Takes one packet; appends what it completed to `out`. Never fails: a bad packet is
    /// counted and dropped.
    pub fn push(&mut self, packet: &RtpPacket<'_>, out: &mut Vec<Output>) {
        self.stats.packets += 1;
        self.stats.bytes += packet.payload.len() as u64;
        if packet.payload_type != self.payload_type {
            self.stats.wrong_payload_type += 1;
            return;
        }
        let next = *self.next.get_or_insert(BASE + u64::from(packet.sequence));
        let delta = packet.sequence.wrapping_sub(next as u16) as i16;
        if delta > MAX_JUMP as i16 || delta < -(MAX_MISORDER as i16) {
            self.jump(packet, out);
            return;
        }
        if self.probation.take().is_some() {
            self.stats.malformed += 1; // a stray: the stream went on where it was
        }
        self.accept(extend(next, packet.sequence), packet, out);
    }

    /// The end of the stream: gives up what is still missing, releases the reorder buffer in
    /// order and emits the last access unit if it is whole.
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        if self.probation.take().is_some() {
            self.stats.malformed += 1;
        }
        self.release_held(out);
        self.assembler.end(out, &mut self.stats);
    }

    /// A packet at extended sequence number `ext`, within `MAX_JUMP` of the next expected one.
    fn accept(&mut self, ext: u64, packet: &RtpPacket<'_>, out: &mut Vec<Output>) {
        let Some(next) = self.next else {
            return;
        };
        if ext < next {
            let back = next - ext;
            if back <= HISTORY && self.delivered & (1u128 << (back - 1)) != 0 {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
            }
            return;
        }
        if ext == next {
            if !self.held.is_empty() {
                self.stats.reordered += 1;
            }
            self.deliver(packet, out);
            self.drain_ready(out);
            return;
        }
        if self.held.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.held_bytes += packet.payload.len();
        self.held.insert(ext, Held::of(packet));
        self.enforce_bounds(out);
    }

    /// Gives up gaps until the buffer is within its bounds.
    fn enforce_bounds(&mut self, out: &mut Vec<Output>) {
        loop {
            let (Some(next), Some((&first, _)), Some((&last, _))) = (
                self.next,
                self.held.first_key_value(),
                self.held.last_key_value(),
            ) else {
                return;
            };
            let within = self.held.len() <= REORDER_WINDOW
                && self.held_bytes <= REORDER_BYTES
                && last - next <= REORDER_PACKETS;
            if within {
                return;
            }
            let before = (self.next, self.held.len());
            self.give_up_to(first, out);
            self.drain_ready(out);
            if (self.next, self.held.len()) == before {
                // cannot happen (held packets are always past `next`), but a loop that makes
                // no progress must not spin: drop what is held
                self.stats.lost += self.held.len() as u64;
                self.held.clear();
                self.held_bytes = 0;
                return;
            }
        }
    }

    /// Declares the sequence numbers from the next expected one up to `first` lost.
    fn give_up_to(&mut self, first: u64, out: &mut Vec<Output>) {
        let Some(next) = self.next else {
            return;
        };
        if first <= next {
            return;
        }
        let lost = first - next;
        self.assembler.gap(lost, out, &mut self.stats);
        self.delivered = if lost >= HISTORY {
            0
        } else {
            self.delivered << lost
        };
        self.next = Some(first);
    }

    /// Delivers the held packets that follow the next expected one without a gap.
    fn drain_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(held) = self.next.and_then(|next| self.held.remove(&next)) {
            self.held_bytes -= held.payload.len();
            self.deliver(&held.as_packet(), out);
        }
    }

    /// Releases the whole buffer in order, giving up every gap in it.
    fn release_held(&mut self, out: &mut Vec<Output>) {
        while let Some((&first, _)) = self.held.first_key_value() {
            self.give_up_to(first, out);
            self.drain_ready(out);
        }
    }

    /// Hands the next expected packet to the assembler.
    fn deliver(&mut self, packet: &RtpPacket<'_>, out: &mut Vec<Output>) {
        if let Some(next) = self.next.as_mut() {
            *next += 1;
        }
        self.delivered = (self.delivered << 1) | 1;
        self.last_timestamp = Some(packet.timestamp);
        self.assembler.packet(packet, out, &mut self.stats);
    }

    /// A packet more than `MAX_JUMP` from the next expected one: on probation, or the second
    /// packet of a restarted source.
    fn jump(&mut self, packet: &RtpPacket<'_>, out: &mut Vec<Output>) {
        let Some(probe) = self.probation.take() else {
            self.probation = Some(Held::of(packet));
            return;
        };
        let delta = packet.sequence.wrapping_sub(probe.sequence) as i16;
        if delta == 0 {
            self.stats.duplicates += 1;
            self.probation = Some(probe);
            return;
        }
        if u64::from(delta.unsigned_abs()) > REORDER_PACKETS {
            self.stats.malformed += 1; // the earlier one was a stray; this one may start a run
            self.probation = Some(Held::of(packet));
            return;
        }
        // the source restarted: end the old one, then resync on the new numbers
        self.stats.restarts += 1;
        self.release_held(out);
        let jumped = self.last_timestamp.is_some_and(|last| {
            (probe.timestamp.wrapping_sub(last) as i32).unsigned_abs() > MAX_TIMESTAMP_JUMP
        });
        self.assembler
            .restart(jumped.then_some(probe.timestamp), out, &mut self.stats);
        let first = if delta < 0 {
            packet.sequence
        } else {
            probe.sequence
        };
        let epoch = (self.next.unwrap_or(BASE) >> 16) + 2;
        let next = (epoch << 16) + u64::from(first);
        self.next = Some(next);
        self.delivered = 0;
        self.accept(extend(next, probe.sequence), &probe.as_packet(), out);
        self.accept(extend(next, packet.sequence), packet, out);
    }
}

/// The extended sequence number nearest to `next` whose low 16 bits are `sequence`.
fn extend(next: u64, sequence: u16) -> u64 {
    let delta = sequence.wrapping_sub(next as u16) as i16;
    next.wrapping_add_signed(i64::from(delta))
}
