//! In which order a pushed stream's segments go to the broadcast, and what happens to the
//! ones that come wrong. Pure: files and playlists go in with the time they came, steps come
//! out; `tests` below and the `hls_push` fuzz target drive it.
//!
//! The rules (what a pusher's user can rely on):
//! - **Playlist order**: segments are fed in media sequence order as the pushed playlists list
//!   them, whatever order their uploads came in. A segment uploaded before a playlist lists it
//!   waits (within the byte budget).
//! - **Start**: the first segment fed is the oldest listed one that has arrived.
//! - **Missing**: a listed segment that has not arrived is waited for `MISSING_WAIT` target
//!   durations after it was first listed (an upload overtaken by the next one comes within
//!   that), then skipped once a later one is here (or the list has
//!   ended); the next segment fed is marked a discontinuity. A listed segment that has dropped
//!   out of the playlist's window unseen is skipped at once.
//! - **Duplicate**: a file uploaded again before it was fed replaces the earlier upload; one
//!   uploaded again after it was fed or skipped is dropped at the next playlist (counted).
//! - **Late**: a segment that comes after it was skipped is dropped (counted).
//! - **Restart**: a playlist whose newest media sequence number is older than the next one
//!   expected, and that lists a segment uploaded again, is a restarted pusher (without one it
//!   is an old playlist that came late, and is ignored): ordering starts over from that playlist, marked a
//!   discontinuity, and its files are taken even when their names were seen before.
//! - **Bounded**: files waiting hold at most `max_bytes` and number at most
//!   `MAX_WAITING_FILES`; past either the oldest upload is dropped (counted). Init segments are
//!   kept while a listed segment names them, at most `MAX_INITS`. The names remembered as fed or skipped are the last `REMEMBERED`.
//! - **End**: once the list has ended and every listed segment was fed or skipped, `Finished`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::playlist::{Listed, PushedPlaylist};

/// Target durations a listed segment that has not arrived is waited for.
const MISSING_WAIT: u32 = 2;
/// Uploads waiting at most (besides their bytes): an upload of nothing costs a slot too.
const MAX_WAITING_FILES: usize = 64;
/// Init segments kept at most (the ones the listed segments name; a pusher has one).
const MAX_INITS: usize = 4;
/// Names of fed or skipped segments remembered, to tell a duplicate or late upload.
const REMEMBERED: usize = 256;

/// What the broadcast should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Demux this segment (after this init segment, when it has one).
    Feed {
        msn: u64,
        name: String,
        bytes: Bytes,
        init: Option<Bytes>,
        /// Something was skipped before it, or the pusher marked or restarted there: the
        /// demuxer starts afresh and the broadcast's timeline is closed up.
        discontinuity: bool,
    },
    /// The pushed stream ended (`EXT-X-ENDLIST`) and all of it was fed.
    Finished,
}

/// What happened to uploads, for the log and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrderStats {
    pub fed: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub late: u64,
    pub evicted: u64,
}

struct Waiting {
    msn_hint: Option<u64>,
    bytes: Bytes,
    arrived: u64,
}

struct ListedAt {
    listed: Listed,
    first_listed: Instant,
}

pub struct Order {
    max_bytes: usize,
    files: HashMap<String, Waiting>,
    waiting_bytes: usize,
    arrivals: u64,
    listed: BTreeMap<u64, ListedAt>,
    next: Option<u64>,
    done: VecDeque<String>,
    /// Each remembered name, and whether it was fed (else skipped).
    done_set: HashMap<String, bool>,
    /// Init segments by name (kept: every segment after them needs them).
    inits: HashMap<String, Bytes>,
    /// The init last handed out with a segment.
    fed_init: Option<String>,
    target: Duration,
    ended: bool,
    finished: bool,
    discontinuity: bool,
    stats: OrderStats,
}

impl Order {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            files: HashMap::new(),
            waiting_bytes: 0,
            arrivals: 0,
            listed: BTreeMap::new(),
            next: None,
            done: VecDeque::new(),
            done_set: HashMap::new(),
            inits: HashMap::new(),
            fed_init: None,
            target: Duration::from_secs(2),
            ended: false,
            finished: false,
            discontinuity: false,
            stats: OrderStats::default(),
        }
    }

    pub fn stats(&self) -> OrderStats {
        self.stats
    }

    /// The pushed playlist's target duration (2 s until one came).
    pub fn target(&self) -> Duration {
        self.target
    }

    /// Whether the last playlist had `EXT-X-ENDLIST` (what is missing is then skipped, not
    /// waited for).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Bytes of uploads waiting to be fed.
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// A file was uploaded (a segment or an init segment: the playlists say which).
    pub fn file(&mut self, name: &str, bytes: Bytes) {
        if self.inits.contains_key(name) {
            self.inits.insert(name.to_string(), bytes);
            self.fed_init = None; // a changed init is handed out again
            return;
        }
        let msn_hint = self
            .listed
            .iter()
            .find(|(_, l)| l.listed.name == name)
            .map(|(msn, _)| *msn);
        if let Some(old) = self.files.remove(name) {
            self.waiting_bytes -= old.bytes.len();
        }
        self.arrivals += 1;
        self.waiting_bytes += bytes.len();
        self.files.insert(
            name.to_string(),
            Waiting {
                msn_hint,
                bytes,
                arrived: self.arrivals,
            },
        );
        while self.waiting_bytes > self.max_bytes || self.files.len() > MAX_WAITING_FILES {
            let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, w)| w.arrived)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            if let Some(w) = self.files.remove(&oldest) {
                self.waiting_bytes -= w.bytes.len();
                self.stats.evicted += 1;
            }
        }
    }

    /// A playlist was uploaded at `now`.
    pub fn playlist(&mut self, playlist: PushedPlaylist, now: Instant) {
        self.target = playlist.target;
        let newest = playlist.segments.last().map(|s| s.msn);
        // a playlist behind what was fed is a restarted pusher only when it brought a segment
        // again; an old playlist that came late is ignored
        if let (Some(next), Some(newest)) = (self.next, newest) {
            let uploaded_again = playlist
                .segments
                .iter()
                .any(|l| self.files.contains_key(&l.name) && self.done_set.contains_key(&l.name));
            if newest + 1 < next && uploaded_again {
                self.restart();
            }
        }
        let maps: HashSet<&String> = playlist
            .segments
            .iter()
            .filter_map(|s| s.map.as_ref())
            .collect();
        for map in &maps {
            if !self.inits.contains_key(*map) {
                if let Some(w) = self.files.remove(*map) {
                    self.waiting_bytes -= w.bytes.len();
                    self.inits.insert((*map).clone(), w.bytes);
                }
            }
        }
        // the inits no listed segment names any more go (those of segments still waiting to
        // be fed from an earlier playlist stay, up to `MAX_INITS`)
        let still_needed: HashSet<&String> = self
            .listed
            .values()
            .filter_map(|l| l.listed.map.as_ref())
            .chain(maps.iter().copied())
            .collect();
        self.inits.retain(|name, _| still_needed.contains(name));
        while self.inits.len() > MAX_INITS {
            let Some(extra) = self
                .inits
                .keys()
                .find(|n| !maps.contains(n))
                .or_else(|| self.inits.keys().next())
                .cloned()
            else {
                break;
            };
            self.inits.remove(&extra);
        }
        let first_listed = playlist.segments.first().map(|s| s.msn);
        for listed in playlist.segments {
            if self.next.is_some_and(|next| listed.msn < next) {
                continue;
            }
            if let Some(w) = self.files.get_mut(&listed.name) {
                w.msn_hint = Some(listed.msn);
            }
            self.listed
                .entry(listed.msn)
                .and_modify(|l| l.listed = listed.clone())
                .or_insert(ListedAt {
                    listed,
                    first_listed: now,
                });
        }
        self.ended = playlist.ended;
        if self.next.is_none() {
            // the oldest listed segment that is here, else the oldest listed
            self.next = self
                .listed
                .iter()
                .find(|(_, l)| self.files.contains_key(&l.listed.name))
                .map(|(msn, _)| *msn)
                .or(first_listed);
        }
        // out of the window unseen: gone for good
        if let (Some(next), Some(first)) = (self.next, first_listed) {
            if next < first {
                self.skip_to(first);
            }
        }
        self.drop_stale_uploads();
    }

    fn restart(&mut self) {
        self.listed.clear();
        self.next = None;
        self.done.clear();
        self.done_set.clear();
        self.ended = false;
        self.finished = false;
        self.discontinuity = true;
        for w in self.files.values_mut() {
            w.msn_hint = None;
        }
    }

    fn skip_to(&mut self, msn: u64) {
        let Some(next) = self.next else { return };
        // only what is listed is visited: a jump of the sequence number costs nothing
        let skipped: Vec<u64> = self.listed.range(next..msn).map(|(m, _)| *m).collect();
        for m in skipped {
            if let Some(l) = self.listed.remove(&m) {
                self.remember(l.listed.name, false);
            }
        }
        self.stats.skipped += msn.saturating_sub(next);
        self.next = Some(msn);
        self.discontinuity = true;
    }

    fn remember(&mut self, name: String, fed: bool) {
        if self.done_set.insert(name.clone(), fed).is_none() {
            self.done.push_back(name);
        }
        while self.done.len() > REMEMBERED {
            if let Some(old) = self.done.pop_front() {
                self.done_set.remove(&old);
            }
        }
    }

    /// Uploads that were already fed or skipped, or belong before the next segment.
    fn drop_stale_uploads(&mut self) {
        let next = self.next.unwrap_or(0);
        let listed_ahead: HashSet<&str> = self
            .listed
            .values()
            .map(|l| l.listed.name.as_str())
            .collect();
        let stale: Vec<String> = self
            .files
            .iter()
            .filter(|(name, w)| {
                !listed_ahead.contains(name.as_str())
                    && (self.done_set.contains_key(name.as_str())
                        || w.msn_hint.is_some_and(|m| m < next))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(w) = self.files.remove(&name) {
                self.waiting_bytes -= w.bytes.len();
                if self.done_set.get(&name) == Some(&true) {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.late += 1;
                }
            }
        }
    }

    /// What to do now: segments ready in order, skips that are due, the end.
    pub fn steps(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(next) = self.next {
            let Some(listed) = self.listed.get(&next) else {
                break;
            };
            let map_ready = listed
                .listed
                .map
                .as_ref()
                .is_none_or(|m| self.inits.contains_key(m));
            if map_ready && self.files.contains_key(&listed.listed.name) {
                let listed = self.listed.remove(&next).map(|l| l.listed);
                let Some(listed) = listed else { break };
                let Some(w) = self.files.remove(&listed.name) else {
                    break;
                };
                self.waiting_bytes -= w.bytes.len();
                let init = match &listed.map {
                    Some(map)
                        if self.fed_init.as_ref() != Some(map)
                            || self.discontinuity
                            || listed.discontinuity =>
                    {
                        self.fed_init = Some(map.clone());
                        self.inits.get(map).cloned()
                    }
                    _ => None,
                };
                steps.push(Step::Feed {
                    msn: next,
                    name: listed.name.clone(),
                    bytes: w.bytes,
                    init,
                    discontinuity: self.discontinuity || listed.discontinuity,
                });
                self.discontinuity = false;
                self.stats.fed += 1;
                self.remember(listed.name, true);
                self.next = Some(next + 1);
                continue;
            }
            let overdue = now.duration_since(listed.first_listed) >= MISSING_WAIT * self.target;
            let later_here = self
                .listed
                .range(next + 1..)
                .any(|(_, l)| self.files.contains_key(&l.listed.name));
            if overdue && (later_here || self.ended) {
                self.skip_to(next + 1);
                continue;
            }
            break;
        }
        if self.ended
            && !self.finished
            && self.listed.range(self.next.unwrap_or(0)..).next().is_none()
        {
            self.finished = true;
            steps.push(Step::Finished);
        }
        // stale uploads are dropped at the next playlist, not here: a restarted pusher's first
        // segment comes before the playlist that shows it is new
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(first: u64, names: &[&str], ended: bool) -> PushedPlaylist {
        PushedPlaylist {
            target: Duration::from_secs(2),
            segments: names
                .iter()
                .enumerate()
                .map(|(i, n)| Listed {
                    msn: first + i as u64,
                    name: n.to_string(),
                    discontinuity: false,
                    map: None,
                })
                .collect(),
            ended,
        }
    }

    fn fed(steps: &[Step]) -> Vec<(String, bool)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Feed {
                    name,
                    discontinuity,
                    ..
                } => Some((name.clone(), *discontinuity)),
                Step::Finished => None,
            })
            .collect()
    }

    fn seg(n: &str) -> Bytes {
        Bytes::from(n.as_bytes().to_vec())
    }

    #[test]
    fn segments_are_fed_in_playlist_order_whatever_order_they_came_in() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        o.file("s1.ts", seg("s1"));
        o.file("s0.ts", seg("s0"));
        o.playlist(playlist(0, &["s0.ts", "s1.ts", "s2.ts"], false), t);
        assert_eq!(
            fed(&o.steps(t)),
            [("s0.ts".into(), false), ("s1.ts".into(), false)]
        );
        o.file("s2.ts", seg("s2"));
        assert_eq!(fed(&o.steps(t)), [("s2.ts".into(), false)]);
    }

    #[test]
    fn a_missing_segment_is_skipped_after_two_target_durations_with_a_discontinuity() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        o.file("s0.ts", seg("s0"));
        o.file("s2.ts", seg("s2"));
        o.playlist(playlist(0, &["s0.ts", "s1.ts", "s2.ts"], false), t);
        assert_eq!(fed(&o.steps(t)), [("s0.ts".into(), false)]);
        assert!(
            fed(&o.steps(t + Duration::from_secs(3))).is_empty(),
            "waits"
        );
        assert_eq!(
            fed(&o.steps(t + Duration::from_secs(4))),
            [("s2.ts".into(), true)]
        );
        // s1 comes late: dropped, never fed
        o.file("s1.ts", seg("s1"));
        o.playlist(playlist(1, &["s1.ts", "s2.ts", "s3.ts"], false), t);
        assert!(fed(&o.steps(t + Duration::from_secs(5))).is_empty());
        assert_eq!(o.stats().late, 1);
        assert_eq!(o.stats().skipped, 1);
        assert_eq!(o.waiting_bytes(), 0);
    }

    #[test]
    fn a_duplicate_is_dropped_and_the_end_comes_once() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        o.file("s0.ts", seg("s0"));
        o.playlist(playlist(0, &["s0.ts"], false), t);
        assert_eq!(fed(&o.steps(t)).len(), 1);
        o.file("s0.ts", seg("s0"));
        o.file("s1.ts", seg("s1"));
        o.playlist(playlist(0, &["s0.ts", "s1.ts"], true), t);
        let steps = o.steps(t);
        assert_eq!(fed(&steps), [("s1.ts".into(), false)]);
        assert_eq!(steps.last(), Some(&Step::Finished));
        assert!(o.steps(t).is_empty());
        assert_eq!(o.stats().duplicates, 1);
    }

    #[test]
    fn a_restarted_pusher_starts_over_with_a_discontinuity() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        for (i, n) in ["s0.ts", "s1.ts", "s2.ts", "s3.ts"].iter().enumerate() {
            o.file(n, seg(n));
            o.playlist(
                playlist(0, &["s0.ts", "s1.ts", "s2.ts", "s3.ts"][..=i], false),
                t,
            );
            o.steps(t);
        }
        o.file("s0.ts", seg("new"));
        assert!(
            o.steps(t).is_empty(),
            "ffmpeg uploads the segment before its playlist"
        );
        o.playlist(playlist(0, &["s0.ts"], false), t);
        assert_eq!(fed(&o.steps(t)), [("s0.ts".into(), true)]);
    }

    #[test]
    fn waiting_uploads_are_bounded_in_bytes() {
        let t = Instant::now();
        let mut o = Order::new(10);
        for i in 0..10 {
            o.file(&format!("s{i}.ts"), Bytes::from(vec![0; 4]));
        }
        assert!(o.waiting_bytes() <= 10);
        assert_eq!(o.stats().evicted, 8);
        o.playlist(playlist(8, &["s8.ts", "s9.ts"], false), t);
        assert_eq!(fed(&o.steps(t)).len(), 2);
    }

    #[test]
    fn an_init_segment_goes_with_the_first_segment_after_it_and_after_a_skip() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        o.file("init.mp4", seg("init"));
        let mut p = playlist(0, &["a0.m4s", "a1.m4s", "a2.m4s"], false);
        for s in &mut p.segments {
            s.map = Some("init.mp4".into());
        }
        o.file("a0.m4s", seg("a0"));
        o.file("a2.m4s", seg("a2"));
        o.playlist(p, t);
        let steps = o.steps(t + Duration::from_secs(5));
        let inits: Vec<bool> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Feed { init, .. } => Some(init.is_some()),
                Step::Finished => None,
            })
            .collect();
        assert_eq!(inits, [true, true], "a0 and, after the skip, a2");
    }

    #[test]
    fn a_jump_of_the_sequence_number_costs_nothing_and_empty_uploads_are_capped() {
        let t = Instant::now();
        let mut o = Order::new(1 << 20);
        o.file("s0.ts", seg("s0"));
        o.playlist(playlist(0, &["s0.ts"], false), t);
        o.steps(t);
        o.file("far.ts", seg("far"));
        o.playlist(playlist(1 << 47, &["far.ts"], false), t);
        assert_eq!(fed(&o.steps(t)), [("far.ts".into(), true)]);
        assert_eq!(o.stats().skipped, (1 << 47) - 1);
        for i in 0..1000 {
            o.file(&format!("empty{i}.ts"), Bytes::new());
        }
        assert!(o.files.len() <= MAX_WAITING_FILES);
    }
}
