//! Packaging: the segmenter (cuts segments, pure) and CMAF box writing (pure).

pub mod cmaf;
pub mod segmenter;

pub use segmenter::{
    CutRule, InitSegment, Segment, Segmenter, SegmenterConfig, SegmenterError, SegmenterOutput,
    TrackSegment,
};
