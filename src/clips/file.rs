//! A VOD's MP4, read from the store: the top video rendition and the audio of a finished VOD
//! (a clip, a recording) under one root, as `mp4` puts them together. `Mp4Source::open` reads
//! the manifests, init segments and first segments (for the decode times the file starts
//! from); `fragment` then reads one segment of each track at a time, so a whole recording is
//! streamed or uploaded with one segment in memory.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use m3u8_rs::AlternativeMediaType;
use object_store::ObjectStore;

use super::{cut, get, mp4, ClipError};
use crate::ingest::fmp4::Fmp4Demuxer;
use crate::media::StreamEvent;
use crate::publish::store::{self, Root};

/// One track of the file: its rendition, the segment numbers it has and how its fragments
/// change.
#[derive(Debug, Clone)]
struct FileTrack {
    rendition: String,
    numbers: HashSet<u64>,
    how: mp4::Renumber,
}

/// What a VOD's MP4 is made of.
#[derive(Debug, Clone)]
pub struct Mp4Source {
    root: Root,
    video: FileTrack,
    audio: Option<FileTrack>,
    numbers: Vec<u64>,
    /// `ftyp` and `moov`.
    pub header: Bytes,
}

/// The top video rendition and the audio rendition of the VOD under `root`, as its
/// multivariant playlist names them.
pub(crate) async fn main_renditions(
    store: &Arc<dyn ObjectStore>,
    root: &Root,
) -> Result<(cut::SourceRendition, Option<cut::SourceRendition>), ClipError> {
    let master = get(store, &root.file(store::MASTER_PLAYLIST)).await?;
    let master = cut::parse_master(&master)?;
    let names = cut::renditions(&master)?;
    let rendition_of = |uri: &str| {
        names
            .iter()
            .find(|r| uri.starts_with(&format!("{}/", r.name)))
            .cloned()
    };
    let video = master
        .variants
        .first()
        .and_then(|v| rendition_of(&v.uri))
        .ok_or_else(|| ClipError::Source("it has no video rendition".into()))?;
    let audio = master
        .alternatives
        .iter()
        .filter(|a| a.media_type == AlternativeMediaType::Audio)
        .find_map(|a| rendition_of(a.uri.as_deref()?));
    Ok((video, audio))
}

/// A rendition's init segment, its timescale and its default sample duration.
pub(crate) async fn init_of(
    store: &Arc<dyn ObjectStore>,
    root: &Root,
    rendition: &str,
) -> Result<(Bytes, u32, u32), ClipError> {
    let init = get(store, &root.rendition_file(rendition, store::INIT_SEGMENT)).await?;
    let timescale = Fmp4Demuxer::new()
        .init(&init)
        .map_err(|e| ClipError::Media(e.to_string()))?
        .into_iter()
        .find_map(|event| match event {
            StreamEvent::Track(info) => Some(info.codec.timescale()),
            _ => None,
        })
        .ok_or_else(|| ClipError::Media(format!("{rendition} has no track")))?;
    Ok((init.clone(), timescale, super::trex_default_duration(&init)))
}

/// What `rendition`'s own media playlist under `root` lists.
pub(crate) async fn listed_in(
    store: &Arc<dyn ObjectStore>,
    root: &Root,
    rendition: &cut::SourceRendition,
) -> Result<Vec<cut::Listed>, ClipError> {
    let playlist = get(
        store,
        &root.rendition_file(&rendition.name, &rendition.playlist),
    )
    .await?;
    // a long recording's playlist is megabytes: parsed off the runtime
    tokio::task::spawn_blocking(move || cut::listed(&playlist))
        .await
        .map_err(|e| ClipError::Source(format!("reading a playlist stopped: {e}")))?
}

impl Mp4Source {
    /// The file of the finished VOD under `root` (its `master.m3u8` and what it names).
    pub async fn open(store: &Arc<dyn ObjectStore>, root: &Root) -> Result<Self, ClipError> {
        let (video, audio) = main_renditions(store, root).await?;
        let listed = listed_in(store, root, &video).await?;
        let audio_listed = match &audio {
            Some(audio) => listed_in(store, root, audio).await?,
            None => Vec::new(),
        };
        let Some(first) = listed.first() else {
            return Err(ClipError::Source("it lists no segment".into()));
        };
        let numbers: Vec<u64> = listed.iter().map(|s| s.number).collect();
        let duration_secs: f64 = listed.iter().map(|s| s.duration_secs).sum();
        // each track's first decode time, in seconds: the file starts at the earlier one (a
        // track may lack the lead's first numbers: its own first is what counts)
        let mut tracks = vec![(video.name.clone(), first.number)];
        if let (Some(audio), Some(first_audio)) = (&audio, audio_listed.first()) {
            tracks.push((audio.name.clone(), first_audio.number));
        }
        let mut inits = Vec::new();
        let mut starts = Vec::new();
        for (name, first) in &tracks {
            let (init, timescale, default_duration) = init_of(store, root, name).await?;
            let segment = get(store, &root.segment(name, *first)).await?;
            let (start, _, _) = mp4::segment_timing(&segment, default_duration)?;
            starts.push(start as f64 / f64::from(timescale));
            inits.push((init, timescale));
        }
        let from = starts
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        let how = |i: usize, track_id| mp4::Renumber {
            track_id,
            shift: (from * f64::from(inits[i].1)).floor() as u64,
        };
        let header = mp4::header(
            &inits[0].0,
            inits.get(1).map(|(init, _)| &init[..]),
            duration_secs,
        )?;
        let audio = match (audio, inits.len() > 1) {
            (Some(a), true) => Some(FileTrack {
                rendition: a.name,
                numbers: audio_listed.iter().map(|s| s.number).collect(),
                how: how(1, Some(mp4::AUDIO_TRACK_ID)),
            }),
            _ => None,
        };
        Ok(Self {
            root: root.clone(),
            video: FileTrack {
                rendition: video.name.clone(),
                numbers: numbers.iter().copied().collect(),
                how: how(0, None),
            },
            audio,
            numbers,
            header: Bytes::from(header),
        })
    }

    /// How many segments the file is made of.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// The fragments of segment `index` (video, then audio), numbered on from `sequence`.
    pub async fn fragment(
        &self,
        store: &Arc<dyn ObjectStore>,
        index: usize,
        sequence: &mut u32,
    ) -> Result<Bytes, ClipError> {
        let Some(&number) = self.numbers.get(index) else {
            return Ok(Bytes::new());
        };
        let mut out = Vec::new();
        for track in std::iter::once(&self.video).chain(&self.audio) {
            if !track.numbers.contains(&number) {
                continue;
            }
            let segment = get(store, &self.root.segment(&track.rendition, number)).await?;
            out.extend(mp4::fragments(&segment, track.how, sequence)?);
        }
        Ok(Bytes::from(out))
    }
}
