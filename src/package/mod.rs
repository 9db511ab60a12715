//! Packaging: the segmenter (cuts segments and their low-latency parts, pure) and CMAF box
//! writing (pure).

pub mod cmaf;
pub mod segmenter;

pub use segmenter::{
    CutRule, InitSegment, Part, PartInfo, Segment, Segmenter, SegmenterConfig, SegmenterError,
    SegmenterOutput, TrackSegment,
};
