use std::io::Read;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::ingest::rtp::packet::MAX_DATAGRAM;
use crate::media::{CodecConfig, MediaFrame, TrackInfo, TrackKind};

/// x264's SPS for 320x240 High (testsrc2, `-f h264`), its PPS, and the SPS of 160x120.
const SPS_320: &[u8] = &[
    0x67, 0x64, 0x00, 0x0d, 0xac, 0xb4, 0x0a, 0x0f, 0xd8, 0x08, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80,
    0x00, 0x00, 0x1e, 0x07, 0x8a, 0x15, 0x50,
];
const SPS_160: &[u8] = &[
    0x67, 0x64, 0x00, 0x0b, 0xac, 0xb4, 0x14, 0x23, 0xf2, 0xe0, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02,
    0x00, 0x00, 0x03, 0x00, 0x78, 0x1e, 0x28, 0x55, 0x40,
];
const PPS: &[u8] = &[0x68, 0xef, 0x0f, 0xcb];
const PT: u8 = 96;
/// ffmpeg's default RTP payload size with `pkt_size=1200` (1200 - 12).
const MAX_PAYLOAD: usize = 1188;
const FRAME: u32 = 3000;

/// A NAL unit: its header byte, then `len - 1` bytes that never form a start code.
fn nal(header: u8, len: usize, seed: u8) -> Vec<u8> {
    let mut nal = vec![header];
    nal.extend((1..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x01));
    nal
}

fn idr(len: usize) -> Vec<u8> {
    nal(0x65, len, 5)
}

fn p_slice(len: usize, seed: u8) -> Vec<u8> {
    nal(0x41, len, seed)
}

fn sei() -> Vec<u8> {
    nal(0x06, 24, 6)
}

fn aud() -> Vec<u8> {
    vec![0x09, 0xF0]
}

/// One RTP datagram.
fn datagram(sequence: u16, timestamp: u32, marker: bool, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x80, u8::from(marker) << 7 | pt];
    d.extend_from_slice(&sequence.to_be_bytes());
    d.extend_from_slice(&timestamp.to_be_bytes());
    d.extend_from_slice(&1234u32.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// Packetizes access units the way ffmpeg's rtpenc_h264 does: a NAL unit that fits the
/// payload size alone, FU-A otherwise; with `stap`, consecutive small NAL units (the SPS, PPS
/// and SEI before an IDR) aggregated into a STAP-A. The marker is on an access unit's last
/// packet.
struct Sender {
    sequence: u16,
    base: u32,
    max_payload: usize,
    stap: bool,
}

impl Sender {
    fn new(sequence: u16, base: u32) -> Self {
        Self {
            sequence,
            base,
            max_payload: MAX_PAYLOAD,
            stap: true,
        }
    }

    fn payloads(&self, nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        let mut aggregate: Vec<&[u8]> = Vec::new();
        let flush = |aggregate: &mut Vec<&[u8]>, payloads: &mut Vec<Vec<u8>>| {
            match aggregate.len() {
                0 => {}
                1 => payloads.push(aggregate[0].to_vec()),
                _ => {
                    let nri = aggregate.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                    let mut stap = vec![nri | 24];
                    for n in aggregate.iter() {
                        stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
                        stap.extend_from_slice(n);
                    }
                    payloads.push(stap);
                }
            }
            aggregate.clear();
        };
        for (i, nal) in nals.iter().enumerate() {
            let last = i + 1 == nals.len();
            if nal.len() <= self.max_payload {
                let size: usize = 1 + aggregate.iter().map(|n| 2 + n.len()).sum::<usize>();
                if self.stap && !last && size + 2 + nal.len() <= self.max_payload {
                    aggregate.push(nal);
                    continue;
                }
                if self.stap && !aggregate.is_empty() && size + 2 + nal.len() <= self.max_payload {
                    aggregate.push(nal);
                    flush(&mut aggregate, &mut payloads);
                    continue;
                }
                flush(&mut aggregate, &mut payloads);
                payloads.push(nal.clone());
                continue;
            }
            flush(&mut aggregate, &mut payloads);
            let indicator = (nal[0] & 0xE0) | 28;
            let kind = nal[0] & 0x1F;
            let chunks: Vec<&[u8]> = nal[1..].chunks(self.max_payload - 2).collect();
            for (j, chunk) in chunks.iter().enumerate() {
                let mut fu_header = kind;
                if j == 0 {
                    fu_header |= 0x80;
                }
                if j + 1 == chunks.len() {
                    fu_header |= 0x40;
                }
                let mut payload = vec![indicator, fu_header];
                payload.extend_from_slice(chunk);
                payloads.push(payload);
            }
        }
        flush(&mut aggregate, &mut payloads);
        payloads
    }

    /// The datagrams of one access unit at `ticks` after the sender's base timestamp.
    fn access_unit(&mut self, ticks: u32, nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let payloads = self.payloads(nals);
        let count = payloads.len();
        payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                let d = datagram(
                    self.sequence,
                    self.base.wrapping_add(ticks),
                    i + 1 == count,
                    PT,
                    payload,
                );
                self.sequence = self.sequence.wrapping_add(1);
                d
            })
            .collect()
    }
}

/// The NAL units of frame `i` of a stream with an IDR (and SPS, PPS, SEI, an AUD) every `gop`.
fn frame_nals(i: usize, gop: usize, sps: &[u8]) -> Vec<Vec<u8>> {
    if i.is_multiple_of(gop) {
        vec![aud(), sps.to_vec(), PPS.to_vec(), sei(), idr(3000 + i)]
    } else {
        vec![aud(), p_slice(300 + (i * 97) % 1500, i as u8)]
    }
}

/// `frames` frames 3000 ticks apart, as datagrams, and what each frame's data must be.
fn stream(sender: &mut Sender, frames: usize, gop: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut datagrams = Vec::new();
    let mut expected = Vec::new();
    for i in 0..frames {
        let nals = frame_nals(i, gop, SPS_320);
        datagrams.extend(sender.access_unit(i as u32 * FRAME, &nals));
        expected.push(sample(&nals));
    }
    (datagrams, expected)
}

/// A frame's data for these NAL units: length-prefixed, without AUD, SPS, PPS and filler.
fn sample(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for nal in nals {
        if !matches!(nal[0] & 0x1F, 7 | 8 | 9 | 12) {
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(nal);
        }
    }
    data
}

fn push_all(d: &mut H264Depacketizer, datagrams: &[Vec<u8>], out: &mut Vec<Output>) {
    for datagram in datagrams {
        let packet = RtpPacket::parse(datagram).expect("test datagrams parse");
        d.push(&packet, out);
        assert!(d.held() <= REORDER_WINDOW && d.held_bytes() <= REORDER_BYTES);
    }
}

fn run(datagrams: &[Vec<u8>]) -> (Vec<Output>, RtpStats) {
    let mut d = H264Depacketizer::new(PT);
    let mut out = Vec::new();
    push_all(&mut d, datagrams, &mut out);
    d.flush(&mut out);
    (out, d.stats())
}

fn frames(out: &[Output]) -> Vec<&MediaFrame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(StreamEvent::Frame(f)) => Some(f),
            _ => None,
        })
        .collect()
}

fn tracks(out: &[Output]) -> Vec<&TrackInfo> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(StreamEvent::Track(t)) => Some(t),
            _ => None,
        })
        .collect()
}

fn losses(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Loss { packets } => Some(*packets),
            _ => None,
        })
        .collect()
}

fn pts(out: &[Output]) -> Vec<i64> {
    frames(out).iter().map(|f| f.pts.ticks).collect()
}

/// Invariants every output holds: a track before the first frame, a keyframe first and after
/// every loss or discontinuity, dts strictly increasing, frames within the limit.
fn assert_well_formed(out: &[Output]) {
    let mut track = false;
    let mut want_sync = true;
    let mut last_dts = None;
    for o in out {
        match o {
            Output::Event(StreamEvent::Track(_)) => track = true,
            Output::Event(StreamEvent::Frame(f)) => {
                assert!(track, "frame before its track");
                assert!(
                    !want_sync || f.sync,
                    "a broken GOP was handed on at {:?}",
                    f.pts
                );
                want_sync = false;
                assert!(
                    last_dts.is_none_or(|d| f.dts.ticks > d),
                    "dts not increasing"
                );
                last_dts = Some(f.dts.ticks);
                assert!(f.data.len() <= MAX_ACCESS_UNIT && !f.segment_start);
                assert_eq!((f.dts.timescale, f.pts.timescale), (TIMESCALE, TIMESCALE));
            }
            Output::Loss { .. } | Output::Discontinuity => want_sync = true,
            Output::Event(_) => {}
        }
    }
}

#[test]
fn an_in_order_stream_gives_its_frames_on_the_rtp_clock_and_one_config() {
    let mut sender = Sender::new(1000, 123_456_789);
    let (datagrams, expected) = stream(&mut sender, 60, 30);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    let tracks = tracks(&out);
    assert_eq!(
        tracks.len(),
        1,
        "identical repeats of SPS/PPS are not announced"
    );
    let CodecConfig::Avc(avc) = &tracks[0].codec else {
        panic!("not AVC: {:?}", tracks[0]);
    };
    assert_eq!(tracks[0].kind, TrackKind::Video);
    assert_eq!(avc.record, crate::ingest::mpegts::avc_record(SPS_320, PPS));
    assert!(matches!(out[0], Output::Event(StreamEvent::Track(_))));
    let frames = frames(&out);
    assert_eq!(frames.len(), 60);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.pts.ticks, i as i64 * 3000);
        assert_eq!(frame.dts, frame.pts);
        assert_eq!(frame.sync, i % 30 == 0);
        assert_eq!(frame.data, expected[i], "frame {i}");
    }
    assert_eq!(losses(&out), Vec::<u64>::new());
    assert_eq!(stats.packets, datagrams.len() as u64);
    assert_eq!(stats.keyframes, 2);
    assert_eq!(
        (stats.lost, stats.dropped_frames, stats.malformed),
        (0, 0, 0)
    );
}

#[test]
fn sequence_numbers_and_timestamps_wrap() {
    let mut sender = Sender::new(65_500, u32::MAX - 10 * FRAME);
    let (datagrams, expected) = stream(&mut sender, 40, 20);
    assert!(sender.sequence < 1000, "the sequence wrapped");
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(pts(&out), (0..40).map(|i| i * 3000).collect::<Vec<i64>>());
    let frames = frames(&out);
    assert!(frames.iter().zip(&expected).all(|(f, e)| f.data == *e));
    assert_eq!((stats.lost, stats.late, stats.duplicates), (0, 0, 0));
}

#[test]
fn reordering_within_the_window_is_recovered_without_loss() {
    let mut sender = Sender::new(40_000, 7);
    let (datagrams, _) = stream(&mut sender, 60, 30);
    let (in_order, _) = run(&datagrams);
    // reverse every run of 8 packets, and swap a few neighbours across the wrap of a run
    // (packets before the very first one received would be late: the first stays first)
    let mut shuffled = datagrams.clone();
    for chunk in shuffled[1..].chunks_mut(8) {
        chunk.reverse();
    }
    let (out, stats) = run(&shuffled);
    assert_eq!(out, in_order);
    assert!(stats.reordered > 0);
    assert_eq!((stats.lost, stats.late, stats.duplicates), (0, 0, 0));
    // the deepest reordering the window takes: one packet 24 places late
    let mut late = datagrams.clone();
    let packet = late.remove(50);
    late.insert(50 + REORDER_WINDOW, packet);
    assert_eq!(run(&late).0, in_order);
    // one place more and it is given up
    let mut too_late = datagrams.clone();
    let packet = too_late.remove(50);
    too_late.insert(50 + REORDER_WINDOW + 1, packet);
    let (out, stats) = run(&too_late);
    assert_eq!((losses(&out), stats.late), (vec![1], 1));
}

#[test]
fn a_lost_packet_is_one_loss_and_frames_wait_for_the_next_idr() {
    let mut sender = Sender::new(0, 0);
    let (mut datagrams, _) = stream(&mut sender, 60, 30);
    // the last fragment of a P frame in the first GOP: the frames from it up to the second
    // IDR go
    let lost_at = (10..datagrams.len())
        .find(|&i| datagrams[i][12] & 0x1F == 28 && datagrams[i][13] & 0x40 != 0)
        .expect("a fragmented P frame");
    assert!(
        u32::from_be_bytes([
            datagrams[lost_at][4],
            datagrams[lost_at][5],
            datagrams[lost_at][6],
            datagrams[lost_at][7]
        ]) < 29 * FRAME
    );
    datagrams.remove(lost_at);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(losses(&out), vec![1]);
    assert_eq!(stats.lost, 1);
    let frames = frames(&out);
    let resumed = frames
        .iter()
        .position(|f| f.pts.ticks == 30 * 3000)
        .expect("frames resume at the second IDR");
    assert!(frames[resumed].sync);
    assert_eq!(frames.len() - resumed, 30, "the second GOP whole");
    assert_eq!(
        frames.len() as u64 + stats.dropped_frames,
        60,
        "every access unit is a frame or a dropped frame"
    );
    // the Loss comes before the frames that resume
    let loss = out.iter().position(|o| matches!(o, Output::Loss { .. }));
    let first_after = out
        .iter()
        .position(|o| o == &Output::Event(StreamEvent::Frame(frames[resumed].clone())));
    assert!(loss < first_after);
}

#[test]
fn a_lost_idr_head_drops_the_gop_and_an_fu_a_without_start_is_malformed() {
    // losing the first fragment of the first IDR: nothing until the next IDR, one Loss
    let mut sender = Sender::new(9, 9);
    let (mut datagrams, _) = stream(&mut sender, 60, 30);
    let fu_start = datagrams
        .iter()
        .position(|d| d[12] & 0x1F == 28 && d[13] & 0x80 != 0)
        .expect("an FU-A start");
    datagrams.remove(fu_start);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(losses(&out), vec![1]);
    assert_eq!(
        stats.malformed, 0,
        "orphans of a reported gap are not malformed"
    );
    assert_eq!(pts(&out), (30..60).map(|i| i * 3000).collect::<Vec<i64>>());

    // the sender leaving out an FU-A start with no sequence number missing: malformed,
    // reported as a loss of 0 packets
    let mut sender = Sender::new(9, 9);
    let mut datagrams = Vec::new();
    for i in 0..60 {
        let mut au = sender.access_unit(i * FRAME, &frame_nals(i as usize, 30, SPS_320));
        if i == 0 {
            let start = au.iter().position(|d| d[12] & 0x1F == 28).expect("FU-A");
            au.remove(start);
            sender.sequence = sender.sequence.wrapping_sub(1);
            for (k, d) in au.iter_mut().enumerate() {
                d[2..4].copy_from_slice(&(9 + k as u16).to_be_bytes());
            }
        }
        datagrams.extend(au);
    }
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(losses(&out), vec![0]);
    assert_eq!((stats.lost, stats.malformed), (0, 1));
    assert_eq!(frames(&out).len(), 30);
}

#[test]
fn duplicate_and_late_packets_are_counted_and_dropped() {
    let mut sender = Sender::new(500, 0);
    let (datagrams, _) = stream(&mut sender, 30, 30);
    let (clean, _) = run(&datagrams);
    // 7 early and twice (the second a duplicate of a held packet), 7 again in its place (a
    // duplicate of a delivered one), 9 twice in a row
    let order = [0, 1, 2, 3, 7, 7, 4, 5, 6, 7, 8, 9, 9];
    let mut doubled: Vec<Vec<u8>> = order.iter().map(|&i| datagrams[i].clone()).collect();
    doubled.extend(datagrams[10..].iter().cloned());
    let (out, stats) = run(&doubled);
    assert_eq!(out, clean);
    assert_eq!((stats.duplicates, stats.reordered), (3, 3));

    // a packet arriving after its gap was given up is late
    let mut late = datagrams.clone();
    let packet = late.remove(20);
    late.insert(20 + REORDER_WINDOW + 5, packet);
    let (out, stats) = run(&late);
    assert_well_formed(&out);
    assert_eq!(losses(&out), vec![1]);
    assert_eq!((stats.late, stats.lost, stats.duplicates), (1, 1, 0));
}

#[test]
fn wrong_payload_types_are_counted_and_dropped() {
    let mut sender = Sender::new(0, 0);
    let (datagrams, _) = stream(&mut sender, 10, 10);
    let (clean, _) = run(&datagrams);
    let mut mixed = datagrams.clone();
    mixed.insert(3, datagram(3, 0, true, 97, &idr(50)));
    mixed.insert(0, datagram(60_000, 0, true, 0, &[0xFF; 20]));
    let (out, stats) = run(&mixed);
    assert_eq!(out, clean);
    assert_eq!(stats.wrong_payload_type, 2);
    assert_eq!(stats.packets, datagrams.len() as u64 + 2);
}

#[test]
fn malformed_payloads_are_dropped_and_never_panic() {
    let head = |seq: u16, payload: &[u8]| datagram(seq, 0, false, PT, payload);
    // a good IDR access unit at timestamp 3000 follows each case
    let good = |seq: u16| {
        let mut sender = Sender::new(seq, 3000);
        sender.access_unit(0, &frame_nals(0, 30, SPS_320))
    };
    let cases: Vec<(&str, Vec<u8>, u64, u64)> = vec![
        // name, payload, malformed, Loss outputs
        ("empty payload", vec![], 1, 0),
        ("STAP-A size past the end", vec![24, 0, 9, 0x67, 1, 2], 1, 1),
        ("STAP-A zero size", vec![24, 0, 0, 0, 1, 0x06], 1, 1),
        ("STAP-A truncated size", vec![24, 0, 2, 0x06, 1, 0], 1, 1),
        ("STAP-A without units", vec![24], 1, 1),
        ("FU-A without FU header", vec![28], 1, 1),
        ("FU-A of a STAP-A", vec![28, 0x80 | 24, 1, 2], 1, 1),
        ("STAP-B", vec![25, 0, 0, 0, 1, 0x06], 1, 0),
        ("MTAP16", vec![26, 1, 2, 3], 1, 0),
        ("MTAP24", vec![27, 1, 2, 3], 1, 0),
        ("FU-B", vec![29, 0x85, 0, 1, 2], 1, 0),
        ("type 0", vec![0, 1], 1, 0),
        ("type 30", vec![30, 1], 1, 0),
        ("type 31", vec![31, 1], 1, 0),
    ];
    for (name, payload, malformed, loss) in cases {
        let mut datagrams = vec![head(0, &payload)];
        datagrams.extend(good(1));
        let (out, stats) = run(&datagrams);
        assert_well_formed(&out);
        assert_eq!(stats.malformed, malformed, "{name}");
        assert_eq!(losses(&out).len() as u64, loss, "{name}");
        assert_eq!(
            frames(&out).len(),
            1,
            "{name}: the next access unit is whole"
        );
    }

    // every truncation of every packet of a real-shaped stream, in place of the whole one
    let mut sender = Sender::new(0, 0);
    let (datagrams, _) = stream(&mut sender, 4, 2);
    for (i, whole) in datagrams.iter().enumerate() {
        for cut in (12..whole.len().min(40)).chain((40..whole.len()).step_by(97)) {
            let mut damaged = datagrams.clone();
            damaged[i].truncate(cut);
            let (out, _) = run(&damaged);
            assert_well_formed(&out);
        }
    }
}

#[test]
fn a_restart_resyncs_and_a_far_timestamp_jump_is_a_discontinuity() {
    let mut old = Sender::new(100, 1_000_000);
    let (mut datagrams, _) = stream(&mut old, 30, 15);
    // the device restarts: new sequence numbers and a timestamp 100 s away
    let mut new = Sender::new(100 + 20_000, 1_000_000u32.wrapping_sub(100 * 90_000));
    let (restarted, _) = stream(&mut new, 30, 15);
    datagrams.extend(restarted.iter().cloned());
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(stats.restarts, 1);
    assert_eq!((stats.lost, stats.late, stats.dropped_frames), (0, 0, 0));
    let discontinuity = out
        .iter()
        .position(|o| o == &Output::Discontinuity)
        .expect("a discontinuity");
    assert_eq!(frames(&out[..discontinuity]).len(), 30);
    // the clock continues one frame after the last
    assert_eq!(pts(&out), (0..60).map(|i| i * 3000).collect::<Vec<i64>>());
    assert!(frames(&out[discontinuity..])[0].sync);

    // a restart whose timestamps continue is a resync, not a discontinuity
    let mut old = Sender::new(100, 5000);
    let (mut datagrams, _) = stream(&mut old, 30, 15);
    let mut new = Sender::new(50_000, 5000);
    let mut gop = Vec::new();
    for i in 30..45 {
        gop.extend(new.access_unit(i * FRAME, &frame_nals(i as usize - 30, 15, SPS_320)));
    }
    datagrams.extend(gop);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert!(!out.contains(&Output::Discontinuity));
    assert_eq!((stats.restarts, stats.lost), (1, 0));
    assert_eq!(pts(&out), (0..45).map(|i| i * 3000).collect::<Vec<i64>>());

    // an encoder restarted just below the old sequence numbers (ffmpeg picks them at random)
    // with a random timestamp: a restart, frames resume at its first IDR
    let mut old = Sender::new(10_000, 0);
    let (mut datagrams, _) = stream(&mut old, 30, 15);
    let mut new = Sender::new(10_000 - 500, 3_000_000_000);
    let (restarted, _) = stream(&mut new, 30, 15);
    datagrams.extend(restarted);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(
        (stats.restarts, stats.late, stats.dropped_frames),
        (1, 0, 0)
    );
    assert!(out.contains(&Output::Discontinuity));
    assert_eq!(pts(&out), (0..60).map(|i| i * 3000).collect::<Vec<i64>>());

    // the same with the sequence going on: the timestamp jump alone starts a new timeline
    let mut sender = Sender::new(0, 0);
    let (mut datagrams, _) = stream(&mut sender, 30, 15);
    sender.base = 2_000_000_000;
    let mut gop = Vec::new();
    for i in 0..15 {
        gop.extend(sender.access_unit(i * FRAME, &frame_nals(i as usize, 15, SPS_320)));
    }
    datagrams.extend(gop);
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!((stats.restarts, stats.clock_jumps, stats.lost), (0, 1, 0));
    assert!(out.contains(&Output::Discontinuity));
    assert_eq!(pts(&out), (0..45).map(|i| i * 3000).collect::<Vec<i64>>());

    // one stray packet far away is dropped, not a restart
    let mut sender = Sender::new(7, 0);
    let (mut datagrams, _) = stream(&mut sender, 30, 15);
    let (clean, _) = run(&datagrams);
    datagrams.insert(40, datagram(30_000, 0, false, PT, &p_slice(10, 1)));
    let (out, stats) = run(&datagrams);
    assert_eq!(out, clean);
    assert_eq!((stats.restarts, stats.malformed), (0, 1));
}

#[test]
fn the_reorder_buffer_stays_within_its_bounds() {
    let mut sender = Sender::new(0, 0);
    sender.max_payload = MAX_DATAGRAM - 12;
    let (datagrams, _) = stream(&mut sender, 200, 50);
    // every other packet missing: a loss per gap, the buffer never past its window
    let sparse: Vec<Vec<u8>> = datagrams.iter().step_by(2).cloned().collect();
    let mut d = H264Depacketizer::new(PT);
    let mut out = Vec::new();
    let mut most = 0;
    for datagram in &sparse {
        let packet = RtpPacket::parse(datagram).expect("parses");
        d.push(&packet, &mut out);
        most = most.max(d.held());
        assert!(d.held() <= REORDER_WINDOW);
        assert!(d.held_bytes() <= REORDER_BYTES);
    }
    assert_eq!(most, REORDER_WINDOW);
    d.flush(&mut out);
    assert_eq!(d.held(), 0);
    assert_well_formed(&out);
    // a packet far ahead (but not a restart) gives the gap up at once
    let mut d = H264Depacketizer::new(PT);
    let mut out = Vec::new();
    for (sequence, expected) in [(0u16, 0), (1 + REORDER_PACKETS as u16 + 1, 0)] {
        let bytes = datagram(sequence, 0, false, PT, &p_slice(20, 0));
        d.push(&RtpPacket::parse(&bytes).expect("parses"), &mut out);
        assert_eq!(d.held(), expected);
    }
    assert_eq!(losses(&out), vec![REORDER_PACKETS + 1]);
}

#[test]
fn access_units_over_the_limits_are_dropped() {
    // 257 NAL units in one access unit, then a good IDR
    let mut sender = Sender::new(0, 0);
    sender.stap = false;
    let mut nals = frame_nals(0, 30, SPS_320);
    nals.extend((0..MAX_NAL_UNITS).map(|i| p_slice(8, i as u8)));
    let mut datagrams = sender.access_unit(0, &nals);
    datagrams.extend(sender.access_unit(FRAME, &frame_nals(0, 30, SPS_320)));
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(pts(&out), vec![3000]);
    assert_eq!(stats.dropped_frames, 1);

    // an IDR of more than MAX_ACCESS_UNIT bytes in FU-A fragments
    let mut sender = Sender::new(0, 0);
    sender.max_payload = MAX_DATAGRAM - 12;
    let mut datagrams = sender.access_unit(
        0,
        &[SPS_320.to_vec(), PPS.to_vec(), idr(MAX_ACCESS_UNIT + 1)],
    );
    datagrams.extend(sender.access_unit(FRAME, &frame_nals(0, 30, SPS_320)));
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(pts(&out), vec![3000]);
    assert_eq!((stats.dropped_frames, stats.lost), (1, 0));
}

#[test]
fn a_changed_config_is_announced_before_its_frame_and_a_bad_one_drops_its_access_unit() {
    let mut sender = Sender::new(0, 0);
    let mut datagrams = Vec::new();
    for i in 0..20 {
        let sps = if i < 10 { SPS_320 } else { SPS_160 };
        datagrams.extend(sender.access_unit(i * FRAME, &frame_nals(i as usize, 5, sps)));
    }
    let (out, _) = run(&datagrams);
    assert_well_formed(&out);
    let announced = tracks(&out);
    assert_eq!(announced.len(), 2);
    let second = out
        .iter()
        .position(|o| o == &Output::Event(StreamEvent::Track(announced[1].clone())))
        .expect("second track");
    assert_eq!(frames(&out[..second]).len(), 10);
    assert!(frames(&out[second..])[0].sync);

    // an SPS that does not parse: its access unit and the GOP go, the stream goes on
    let bad_sps = [0x67, 0xFF, 0xFF, 0xFF, 0xFF];
    let mut sender = Sender::new(0, 0);
    let mut datagrams = Vec::new();
    for i in 0..20 {
        let sps = if (5..10).contains(&i) {
            &bad_sps[..]
        } else {
            SPS_320
        };
        datagrams.extend(sender.access_unit(i * FRAME, &frame_nals(i as usize, 5, sps)));
    }
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(tracks(&out).len(), 1);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.dropped_frames, 5);
    let expected: Vec<i64> = (0..5).chain(10..20).map(|i| i * 3000).collect();
    assert_eq!(pts(&out), expected);
}

#[test]
fn frames_before_the_first_parameter_sets_or_idr_are_dropped() {
    let mut sender = Sender::new(0, 0);
    let mut datagrams = Vec::new();
    // joins mid-GOP: P frames, an IDR without SPS/PPS, then the stream's first SPS+PPS+IDR
    for i in 0..3 {
        datagrams.extend(sender.access_unit(i * FRAME, &[p_slice(100, i as u8)]));
    }
    datagrams.extend(sender.access_unit(3 * FRAME, &[idr(2000)]));
    datagrams.extend(sender.access_unit(4 * FRAME, &[p_slice(100, 4)]));
    for i in 5..10 {
        datagrams.extend(sender.access_unit(i * FRAME, &frame_nals(i as usize, 5, SPS_320)));
    }
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    assert_eq!(pts(&out), (5..10).map(|i| i * 3000).collect::<Vec<i64>>());
    assert_eq!(stats.dropped_frames, 5);
}

#[test]
fn access_units_end_on_a_new_timestamp_and_flush_emits_the_last_whole_one() {
    // a sender that never sets the marker
    let mut sender = Sender::new(0, 0);
    let (mut datagrams, expected) = stream(&mut sender, 10, 5);
    for d in &mut datagrams {
        d[1] &= 0x7F;
    }
    let mut d = H264Depacketizer::new(PT);
    let mut out = Vec::new();
    push_all(&mut d, &datagrams, &mut out);
    assert_eq!(frames(&out).len(), 9, "the last waits for the end");
    d.flush(&mut out);
    let got = frames(&out);
    assert_eq!(got.len(), 10);
    assert!(got.iter().zip(&expected).all(|(f, e)| f.data == *e));

    // flush releases what the reorder buffer holds, giving up the gap before it
    let mut sender = Sender::new(0, 0);
    let (datagrams, _) = stream(&mut sender, 5, 5);
    let mut d = H264Depacketizer::new(PT);
    let mut out = Vec::new();
    let (last, rest) = datagrams.split_last().expect("packets");
    push_all(&mut d, &rest[..rest.len() - 1], &mut out);
    push_all(&mut d, std::slice::from_ref(last), &mut out);
    assert_eq!(d.held(), 1);
    d.flush(&mut out);
    assert_eq!(d.held(), 0);
    assert_eq!(losses(&out), vec![1]);
    assert_eq!(d.stats().lost, 1);

    // a stream ending inside a fragmented NAL unit: its access unit is not emitted
    let mut sender = Sender::new(0, 0);
    let mut datagrams = sender.access_unit(0, &frame_nals(0, 5, SPS_320));
    datagrams.extend(sender.access_unit(FRAME, &[p_slice(3000, 1)]));
    datagrams.pop();
    let (out, stats) = run(&datagrams);
    assert_eq!(frames(&out).len(), 1);
    assert_eq!((stats.dropped_frames, stats.malformed), (1, 0));
    assert!(losses(&out).is_empty());
}

#[test]
fn dts_stays_strictly_increasing_and_pts_never_before_it_when_timestamps_go_back() {
    let mut sender = Sender::new(0, 0);
    let mut datagrams = Vec::new();
    for (i, ticks) in [0u32, 6000, 3000, 3000, 9000].iter().enumerate() {
        let nals = if i == 0 {
            frame_nals(0, 30, SPS_320)
        } else {
            vec![p_slice(100, i as u8)]
        };
        datagrams.extend(sender.access_unit(*ticks, &nals));
    }
    let (out, _) = run(&datagrams);
    assert_well_formed(&out);
    let frames = frames(&out);
    let times: Vec<(i64, i64)> = frames.iter().map(|f| (f.pts.ticks, f.dts.ticks)).collect();
    assert_eq!(
        times,
        vec![
            (0, 0),
            (6000, 6000),
            (6001, 6001),
            (6002, 6002),
            (9000, 9000)
        ]
    );
}

/// What ffmpeg sends for `testsrc2` encoded by x264 with `-f rtp` (payload type 96, SSRC
/// 1234, `pkt_size=1200`), received on a UDP socket; `None` (and a message) without ffmpeg.
pub(crate) fn ffmpeg_rtp(size: &str, rate: u32, seconds: u32, gop: u32) -> Option<Vec<Vec<u8>>> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("skipped: ffmpeg is not on PATH");
        return None;
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = socket.local_addr().expect("address").port();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate={rate}"))
        .args(["-t", &seconds.to_string(), "-c:v", "libx264"])
        .args(["-preset", "veryfast", "-g", &gop.to_string(), "-bf", "0"])
        .args(["-f", "rtp", "-payload_type", "96", "-ssrc", "1234"])
        .arg(format!("rtp://127.0.0.1:{port}?pkt_size=1200"))
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // the SDP
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut datagrams = Vec::new();
    let mut buf = vec![0; 65_536];
    let mut exited = false;
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => datagrams.push(buf[..n].to_vec()),
            // nothing for 200 ms: done once ffmpeg has exited (what it sent is queued by then)
            Err(_) if exited => break,
            Err(_) => {}
        }
        exited = exited || !matches!(ffmpeg.try_wait(), Ok(None));
    }
    if !exited {
        let _ = ffmpeg.kill();
    }
    let status = ffmpeg.wait();
    let mut errors = String::new();
    if let Some(mut stderr) = ffmpeg.stderr.take() {
        let _ = stderr.read_to_string(&mut errors);
    }
    assert!(exited, "ffmpeg took over a minute");
    assert!(status.is_ok_and(|s| s.success()), "ffmpeg failed: {errors}");
    Some(datagrams)
}

#[test]
fn a_real_ffmpeg_rtp_stream_gives_every_frame() {
    let Some(datagrams) = ffmpeg_rtp("320x240", 30, 2, 30) else {
        return;
    };
    let (out, stats) = run(&datagrams);
    assert_well_formed(&out);
    let got = frames(&out);
    assert_eq!(got.len(), 60, "{stats:?}");
    assert_eq!(got.iter().filter(|f| f.sync).count(), 2);
    assert_eq!(stats.keyframes, 2);
    assert!(got
        .windows(2)
        .all(|w| w[1].pts.ticks - w[0].pts.ticks == 3000));
    assert_eq!(got[0].pts.ticks, 0);
    assert_eq!(tracks(&out).len(), 1);
    assert_eq!(
        (stats.lost, stats.malformed, stats.dropped_frames),
        (0, 0, 0)
    );
    // each frame's NAL units are length-prefixed slices and SEI, nothing else
    for frame in &got {
        let mut rest = &frame.data[..];
        while let Some((len, after)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            assert!(len > 0 && len <= after.len());
            assert!(
                matches!(after[0] & 0x1F, 1 | 5 | 6),
                "NAL type {}",
                after[0] & 0x1F
            );
            rest = &after[len..];
        }
        assert!(rest.is_empty());
    }
    // reordered and lossy deliveries of the same packets
    let mut shuffled = datagrams.clone();
    for chunk in shuffled[1..].chunks_mut(5) {
        chunk.rotate_left(2);
    }
    assert_eq!(run(&shuffled).0, out);
    let lossy: Vec<Vec<u8>> = datagrams
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != datagrams.len() / 3)
        .map(|(_, d)| d.clone())
        .collect();
    let (lossy_out, lossy_stats) = run(&lossy);
    assert_well_formed(&lossy_out);
    assert_eq!(lossy_stats.lost, 1);
    assert_eq!(losses(&lossy_out), vec![1]);
    let second_gop = frames(&lossy_out)
        .iter()
        .filter(|f| f.pts.ticks >= 30 * 3000)
        .count();
    assert_eq!(second_gop, 30);
}

/// Fuzz input for `fuzz_harness::rtp_h264`: each datagram behind its 2-byte big-endian length.
fn fuzz_input(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut input = Vec::new();
    for d in datagrams {
        input.extend_from_slice(&(d.len() as u16).to_be_bytes());
        input.extend_from_slice(d);
    }
    input
}

/// Regenerates the committed seeds of the `rtp_h264` fuzz target (needs ffmpeg):
/// `cargo test --lib ingest::rtp -- --ignored write_rtp_h264_seeds`.
#[test]
#[ignore = "regenerates fuzz/corpus/rtp_h264; needs ffmpeg"]
fn write_rtp_h264_seeds() {
    let datagrams = ffmpeg_rtp("128x96", 10, 1, 5).expect("ffmpeg");
    assert_eq!(frames(&run(&datagrams).0).len(), 10);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rtp_h264");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let write = |name: &str, datagrams: &[Vec<u8>]| {
        std::fs::write(dir.join(name), fuzz_input(datagrams)).expect("seed written");
    };
    write("ffmpeg_in_order", &datagrams);
    let mut reordered = datagrams.clone();
    for chunk in reordered.chunks_mut(4) {
        chunk.reverse();
    }
    write("ffmpeg_reordered", &reordered);
    let lossy: Vec<Vec<u8>> = datagrams
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 9 != 4)
        .map(|(_, d)| d.clone())
        .collect();
    write("ffmpeg_lossy", &lossy);
    // the same stream restarted: new sequence numbers, the timestamp 100 s back
    let mut restarted = datagrams.clone();
    for d in datagrams.iter() {
        let mut d = d.clone();
        let sequence = u16::from_be_bytes([d[2], d[3]]).wrapping_add(20_000);
        let timestamp = u32::from_be_bytes([d[4], d[5], d[6], d[7]]).wrapping_sub(9_000_000);
        d[2..4].copy_from_slice(&sequence.to_be_bytes());
        d[4..8].copy_from_slice(&timestamp.to_be_bytes());
        restarted.push(d);
    }
    let (out, stats) = run(&restarted);
    assert!(out.contains(&Output::Discontinuity) && stats.restarts == 1);
    assert_eq!(frames(&out).len(), 20);
    write("ffmpeg_restart", &restarted);
    let mut sender = Sender::new(65_530, u32::MAX - 2 * FRAME);
    sender.max_payload = 200;
    let (synthetic, _) = stream(&mut sender, 6, 3);
    write("synthetic_wrap_stap_fu", &synthetic);
}
