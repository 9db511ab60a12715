//! Segment numbers are never reused and no stored object's bytes ever change, whatever happens
//! to the broadcasts: a takeover while the old broadcast flushes its last segment, and a
//! `kill -9` of the server mid-broadcast followed by a restart and a new broadcast. A watcher
//! hashes every object under the stream's live and recording folders while it all happens.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

/// Every `.m4s` and `init.mp4` file below `root`, with the hash of its bytes.
fn snapshot(root: &Path, out: &mut Vec<(PathBuf, [u8; 32])>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            snapshot(&path, out);
        } else if path.extension().is_some_and(|e| e == "m4s") {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, Sha256::digest(&bytes).into()));
            }
        }
    }
}

/// Hashes every segment object every 100 ms; records any path whose bytes changed.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<PathBuf, [u8; 32]>>>,
    changed: Arc<Mutex<Vec<PathBuf>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(media: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let changed = Arc::new(Mutex::new(Vec::new()));
        let (s, h, c) = (stop.clone(), seen.clone(), changed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut now = Vec::new();
                snapshot(&media, &mut now);
                let mut seen = h.lock().unwrap();
                for (path, hash) in now {
                    if let Some(old) = seen.insert(path.clone(), hash) {
                        if old != hash {
                            c.lock().unwrap().push(path);
                        }
                    }
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            seen,
            changed,
            thread: Some(thread),
        }
    }

    /// Recordings (`vod/{session}/`) of which it has hashed a segment so far.
    fn recordings_seen(&self, media: &Path) -> usize {
        let seen = self.seen.lock().unwrap();
        let sessions: BTreeSet<String> = seen
            .keys()
            .filter_map(|path| {
                let rel = path.strip_prefix(media).ok()?;
                let mut parts = rel.iter().map(|p| p.to_string_lossy().into_owned());
                (parts.next()? == "vod").then(|| parts.next())?
            })
            .collect();
        sessions.len()
    }

    fn finish(mut self) -> (HashMap<PathBuf, [u8; 32]>, Vec<PathBuf>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap().clone();
        let changed = self.changed.lock().unwrap().clone();
        (seen, changed)
    }
}

fn segments_listed(server: &Server, playback_id: &str) -> Option<u64> {
    server
        .get_text(&format!("live/{playback_id}/source/index.m3u8"))
        .and_then(|p| last_segment_number(&p))
}

#[test]
fn takeovers_and_crashes_never_reuse_a_number_or_change_an_object() {
    let mut server = Server::start();
    let stream = server.create_stream("cam", "passthrough");
    let watcher = Watcher::start(server.media_dir());

    // A takeover: a second publisher while the first is live; the first flushes its last
    // segment while the second starts.
    let mut first = publish(&server.rtmp_url(&stream.key), 30);
    let n = wait_for(Duration::from_secs(20), || {
        segments_listed(&server, &stream.playback_id)
    })
    .expect("first broadcast live");
    let mut second = publish(&server.rtmp_url(&stream.key), 30);
    wait_for(Duration::from_secs(20), || {
        segments_listed(&server, &stream.playback_id).filter(|m| *m > n + 2)
    })
    .expect("the second broadcast publishes");
    // the crash comes once the second broadcast's recording holds a segment the watcher saw
    wait_for(Duration::from_secs(20), || {
        (watcher.recordings_seen(&server.media_dir()) >= 2).then_some(())
    })
    .expect("both recordings hold segments");
    let _ = first.wait();

    // A crash mid-broadcast, a restart on the same data, and a new broadcast.
    server.kill();
    let _ = second.kill();
    let _ = second.wait();
    server.restart();
    let mut third = publish(&server.rtmp_url(&stream.key), 6);
    wait_for(Duration::from_secs(20), || {
        let text = server.get_text(&format!("live/{}/source/index.m3u8", stream.playback_id))?;
        text.contains("#EXT-X-ENDLIST").then_some(())
    })
    .expect("the third broadcast ends");
    assert!(third.wait().expect("ffmpeg").success());
    std::thread::sleep(Duration::from_millis(300)); // one more look by the watcher
    let (seen, changed) = watcher.finish();

    assert!(
        changed.is_empty(),
        "objects whose bytes changed: {changed:?}"
    );
    // Recordings: each session's numbers are its own.
    let mut by_session: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for path in seen.keys() {
        let rel = path.strip_prefix(server.media_dir()).unwrap_or(path);
        let parts: Vec<_> = rel
            .iter()
            .map(|p| p.to_string_lossy().to_string())
            .collect();
        if let [root, session, rendition, file] = parts.as_slice() {
            if root == "vod" && rendition == "source" {
                if let Some(n) = file.strip_suffix(".m4s").and_then(|f| f.parse().ok()) {
                    by_session.entry(session.clone()).or_default().insert(n);
                }
            }
        }
    }
    assert!(by_session.len() >= 3, "sessions recorded: {by_session:?}");
    let mut all = BTreeSet::new();
    for (session, numbers) in &by_session {
        for n in numbers {
            assert!(
                all.insert(*n),
                "segment {n} of {session} was used by another session"
            );
        }
    }
    let live: usize = seen
        .keys()
        .filter(|p| p.to_string_lossy().contains("/live/"))
        .count();
    assert!(live > 5, "the watcher saw {live} live segments");
}
