//! Transcoding: ladders (`ladder`), the pure planner (`plan`) and the FFmpeg workers.
pub mod avc;
pub mod cadence;
pub mod ladder;
pub mod plan;

pub use ladder::{Ladder, LadderError, Ladders};
pub use plan::{Plan, PlannedVideo, Source};
