//! FLV demux + segmenting + CMAF packaging throughput (MB/s of FLV tag bodies), on real
//! x264/AAC tags made by the ffmpeg CLI once per run.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::ingest::flv::FlvDemuxer;
use strata::media::RenditionEvent;
use strata::package::{CutRule, Segmenter, SegmenterConfig};

struct Tag {
    video: bool,
    timestamp: u32,
    body: Bytes,
}

fn sample_flv() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-720p30-20s.flv");
    if !path.exists() {
        let status = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "20",
            ])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-g", "60", "-bf", "2",
            ])
            .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv"])
            .arg(&path)
            .status()
            .expect("ffmpeg is needed to make the benchmark input");
        assert!(status.success());
    }
    std::fs::read(&path).expect("read benchmark input")
}

/// Splits an FLV file into tag bodies (audio 8, video 9).
fn tags(flv: &[u8]) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut pos = 13;
    while pos + 11 <= flv.len() {
        let kind = flv[pos];
        let size = u32::from_be_bytes([0, flv[pos + 1], flv[pos + 2], flv[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([flv[pos + 7], flv[pos + 4], flv[pos + 5], flv[pos + 6]]);
        let body = &flv[pos + 11..(pos + 11 + size).min(flv.len())];
        if kind == 8 || kind == 9 {
            out.push(Tag {
                video: kind == 9,
                timestamp: ts,
                body: Bytes::copy_from_slice(body),
            });
        }
        pos += 11 + size + 4;
    }
    out
}

fn package(tags: &[Tag]) -> usize {
    let mut demuxer = FlvDemuxer::new();
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: 2.0,
        first_number: 0,
        part_duration: 0.5,
        cut: CutRule::AfterTarget,
    });
    let mut outputs = 0;
    for tag in tags {
        let event = if tag.video {
            demuxer.video(tag.body.clone(), tag.timestamp)
        } else {
            demuxer.audio(tag.body.clone(), tag.timestamp)
        };
        if let Ok(Some(event)) = event {
            outputs += segmenter.push(event.into()).map(|o| o.len()).unwrap_or(0);
        }
    }
    outputs
        + segmenter
            .push(RenditionEvent::End)
            .map(|o| o.len())
            .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let flv = sample_flv();
    let tags = tags(&flv);
    let bytes: usize = tags.iter().map(|t| t.body.len()).sum();
    let mut group = c.benchmark_group("flv_to_cmaf");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(20);
    group.bench_function("720p30_20s", |b| b.iter(|| package(&tags)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
