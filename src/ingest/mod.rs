//! Ingest: one folder per input protocol, each turning its wire format into `StreamEvent`s and
//! owning its connection's clock; admission and lifecycle are the broadcast core's
//! (`crate::broadcast`).

pub mod admission;
pub mod flv;
pub mod fmp4;
pub mod hls_push;
pub mod mpegts;
pub mod rtmp;
pub mod rtp;
pub mod srt;
pub mod ws;
