//! Where thumbnails go: which segments of a VOD get one, how they sit in sprite sheets, and the
//! WebVTT thumbnails track that points at them. Plain functions, no I/O.
//!
//! A thumbnail is the keyframe a segment starts with (every segment starts with one, so no
//! frame in between is ever decoded). Segments get one when they start at least
//! `MIN_TILE_GAP_SECS` after the previous thumbnail, so a recording with 2 s segments gets one
//! every 4 s. A sheet holds up to `COLUMNS` × `ROWS` thumbnails, row by row; the track's cue
//! for a thumbnail runs from its segment's start to the next thumbnail's (the last to the end),
//! its text is `previews/{sheet}.jpg#xywh=x,y,w,h` (a media fragment, resolved against the
//! track's own URL), the form hls.js-era players and ours read.

use std::fmt::Write;

/// Thumbnails per row of a sheet.
pub const COLUMNS: u32 = 10;
/// Rows of a full sheet.
pub const ROWS: u32 = 10;
/// Thumbnails per sheet.
pub const TILES_PER_SHEET: usize = (COLUMNS * ROWS) as usize;
/// A thumbnail's width in pixels (its height follows the picture's aspect).
pub const TILE_WIDTH: u32 = 160;
/// The least media time between two thumbnails.
pub const MIN_TILE_GAP_SECS: f64 = 4.0;
/// The folder of a VOD's sheets, under its root.
pub const SHEET_DIR: &str = "previews";

/// One thumbnail: the segment (its index in the playlist) whose keyframe it shows and the
/// media time it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    pub segment: usize,
    pub start_secs: f64,
    pub end_secs: f64,
}

/// The thumbnails of a VOD whose segments last `durations` seconds each, in order.
pub fn choose(durations: &[f64]) -> Vec<Tile> {
    let mut tiles: Vec<Tile> = Vec::new();
    let mut at = 0.0;
    for (segment, duration) in durations.iter().enumerate() {
        let due = tiles
            .last()
            .is_none_or(|last| at - last.start_secs >= MIN_TILE_GAP_SECS - 1e-6);
        if due {
            if let Some(last) = tiles.last_mut() {
                last.end_secs = at;
            }
            tiles.push(Tile {
                segment,
                start_secs: at,
                end_secs: at,
            });
        }
        at += duration.max(0.0);
    }
    if let Some(last) = tiles.last_mut() {
        last.end_secs = at;
    }
    tiles
}

/// A thumbnail's place in its sheet: `index` counts from the sheet's first.
pub fn region(index: usize, tile_width: u32, tile_height: u32) -> (u32, u32) {
    let index = index as u32;
    (
        (index % COLUMNS) * tile_width,
        (index / COLUMNS) * tile_height,
    )
}

/// A sheet's size for `tiles` thumbnails of `tile_width` × `tile_height`.
pub fn sheet_size(tiles: usize, tile_width: u32, tile_height: u32) -> (u32, u32) {
    let tiles = tiles.max(1) as u32;
    let columns = tiles.min(COLUMNS);
    let rows = tiles.div_ceil(COLUMNS);
    (columns * tile_width, rows * tile_height)
}

/// A thumbnail's size for a `width` × `height` picture: `TILE_WIDTH` wide (or the picture's
/// width when it is narrower), the aspect kept, even sides (4:2:0 chroma).
pub fn tile_size(width: u32, height: u32) -> (u32, u32) {
    let even = |v: u32| (v.max(2) / 2) * 2;
    let w = even(width.min(TILE_WIDTH));
    let h = (f64::from(w) * f64::from(height.max(1)) / f64::from(width.max(1))).round() as u32;
    (w, even(h.min(8 * TILE_WIDTH)))
}

/// One cue of the track: a time range and where its thumbnail is.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start_secs: f64,
    pub end_secs: f64,
    pub sheet: usize,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The path of sheet `sheet` relative to the VOD's root (and to its track).
pub fn sheet_name(sheet: usize) -> String {
    format!("{SHEET_DIR}/{sheet}.jpg")
}

fn timestamp(secs: f64) -> String {
    let millis = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

/// The WebVTT thumbnails track.
pub fn vtt(cues: &[Cue]) -> String {
    let mut text = String::from("WEBVTT\n");
    for cue in cues {
        let _ = write!(
            text,
            "\n{} --> {}\n{}#xywh={},{},{},{}\n",
            timestamp(cue.start_secs),
            timestamp(cue.end_secs),
            sheet_name(cue.sheet),
            cue.x,
            cue.y,
            cue.width,
            cue.height
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_come_every_four_seconds_and_cover_the_whole_vod() {
        let tiles = choose(&[2.0, 2.0, 2.0, 2.0, 2.0, 1.5]);
        let starts: Vec<f64> = tiles.iter().map(|t| t.start_secs).collect();
        assert_eq!(starts, [0.0, 4.0, 8.0]);
        assert_eq!(
            tiles.iter().map(|t| t.segment).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        assert_eq!(tiles[0].end_secs, 4.0);
        assert_eq!(tiles[2].end_secs, 11.5);
        // long segments: one each
        let tiles = choose(&[6.0, 6.0]);
        assert_eq!(tiles.len(), 2);
        assert!(choose(&[]).is_empty());
    }

    #[test]
    fn sheets_fill_row_by_row() {
        assert_eq!(region(0, 160, 90), (0, 0));
        assert_eq!(region(9, 160, 90), (1440, 0));
        assert_eq!(region(10, 160, 90), (0, 90));
        assert_eq!(sheet_size(3, 160, 90), (480, 90));
        assert_eq!(sheet_size(100, 160, 90), (1600, 900));
        assert_eq!(sheet_size(11, 160, 90), (1600, 180));
    }

    #[test]
    fn tiles_keep_the_aspect_with_even_sides() {
        assert_eq!(tile_size(1280, 720), (160, 90));
        assert_eq!(tile_size(640, 480), (160, 120));
        assert_eq!(tile_size(720, 1280), (160, 284));
        assert_eq!(tile_size(100, 50), (100, 50));
        assert_eq!(tile_size(1, 1), (2, 2));
    }

    #[test]
    fn the_track_is_webvtt_with_media_fragments() {
        let text = vtt(&[Cue {
            start_secs: 3661.5,
            end_secs: 3665.0,
            sheet: 2,
            x: 160,
            y: 90,
            width: 160,
            height: 90,
        }]);
        assert_eq!(
            text,
            "WEBVTT\n\n01:01:01.500 --> 01:01:05.000\npreviews/2.jpg#xywh=160,90,160,90\n"
        );
    }
}
