//! Strata: a live-streaming server. RTMP in; one CMAF segment set out under HLS and DASH
//! manifests, written through `object_store` and served by an HTTP origin.
//!
//! See `DESIGN.md` in the shared docs for the path of one frame; each module's doc says what it
//! owns.

pub mod app;
pub mod broadcast;
pub mod clips;
pub mod cluster;
pub mod config;
pub mod db;
pub mod devices;
pub mod edge;
pub mod events;
pub mod fuzz_harness;
pub mod hot;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod manifest;
pub mod media;
pub mod open_files;
pub mod package;
pub mod pipeline;
pub mod previews;
pub mod publish;
pub mod telemetry;
pub mod transcode;
pub mod webhooks;
