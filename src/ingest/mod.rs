//! Ingest: one folder per input protocol, each turning its wire format into `StreamEvent`s.

pub mod admission;
pub mod flv;
pub mod rtmp;
