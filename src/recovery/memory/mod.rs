//! The intolerance memory: what each peer tolerated and failed on, whether it ever
//! did TLS (the pin), kept across connections, processes and restarts.
//!
//! Keyed by (protocol, host, port). Intolerance expires and is re-probed; tolerance
//! and pins live longer and are refreshed on success. Optional persistence in a
//! versioned text file shared by several processes (an exclusive lock, a merge with
//! what is on disk, an atomic replace), or in a store the application provides.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;

use super::{FailureClass, Rung};
use crate::error::{Code, Error, Result};
use crate::protocol::Proto;

mod packed;
mod record;
#[cfg(test)]
mod tests;

use packed::*;
pub use record::{parse_file, parse_line, Intolerance, Key, Record, FILE_MAGIC};

/// Lifetimes, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long an intolerance record is used (default 7 days).
    pub intolerance: u64,
    /// After how long an intolerant peer gets one try at the top rung again (default 24 hours).
    pub reprobe: u64,
    /// How long tolerance and pins last without a refresh (default 60 days).
    pub tolerance: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes { intolerance: 7 * 86400, reprobe: 86400, tolerance: 60 * 86400 }
    }
}

/// A store the application provides (get / put / delete of a record's text by key text).
pub trait Store: Send + Sync {
    /// The record text for a key, if any.
    fn get(&self, key: &str) -> Option<String>;
    /// Stores the record text for a key.
    fn put(&self, key: &str, value: &str);
    /// Deletes a key.
    fn delete(&self, key: &str);
}

/// What the memory advises for a new attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The rung to start at.
    pub rung: Rung,
    /// Whether to send SNI.
    pub sni: bool,
    /// Whether the peer is pinned (negotiated TLS within the pin lifetime).
    pub pinned: bool,
    /// Whether this start is a re-probe of the top rung for an intolerant peer.
    pub reprobe: bool,
    /// Whether the peer was found incompatible recently (nothing rustls offers works).
    pub incompatible: bool,
    /// Facts about the peer that had outlived their lifetime and were not used.
    pub expired: Vec<&'static str>,
}

enum Backend {
    Process,
    File { path: PathBuf, stamp: Option<std::time::SystemTime> },
    Store(Box<dyn Store>),
}

/// Shards of the process map: lookups from several threads rarely meet on one lock.
const SHARDS: usize = 16;

/// The memory: thread-safe, shared by every session of the configs that use it.
/// A lookup in process memory takes one lock, of one shard of the map; the backend's
/// kind, the clock and the lifetimes are read without locks.
pub struct Memory {
    maps: [Mutex<HashMap<Key, Packed>>; SHARDS],
    backend: Mutex<Backend>,
    /// What `backend` is; it never changes.
    kind: Kind,
    /// Unix seconds fixed by `set_clock`, 0 for the system clock.
    clock: AtomicU64,
    /// intolerance, reprobe, tolerance (seconds).
    lifetimes: [AtomicU64; 3],
    problems: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Process,
    File,
    Store,
}

/// The shard of a key: a cheap FNV-1a over the host and port (the map hashes again).
fn shard(key: &Key) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key.host.as_bytes().iter().chain(&key.port.to_le_bytes()) {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as usize % SHARDS
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("entries", &self.maps.iter().map(|m| m.lock().len()).sum::<usize>()).finish()
    }
}

impl Memory {
    fn with(backend: Backend) -> Self {
        let kind = match backend {
            Backend::Process => Kind::Process,
            Backend::File { .. } => Kind::File,
            Backend::Store(_) => Kind::Store,
        };
        let l = Lifetimes::default();
        Memory {
            maps: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            backend: Mutex::new(backend),
            kind,
            clock: AtomicU64::new(0),
            lifetimes: [AtomicU64::new(l.intolerance), AtomicU64::new(l.reprobe), AtomicU64::new(l.tolerance)],
            problems: Mutex::new(Vec::new()),
        }
    }

    fn map(&self, key: &Key) -> parking_lot::MutexGuard<'_, HashMap<Key, Packed>> {
        self.maps[shard(key)].lock()
    }

    /// Every shard locked, in order (whole-map work: file merge and save, listing).
    fn all_maps(&self) -> Vec<parking_lot::MutexGuard<'_, HashMap<Key, Packed>>> {
        self.maps.iter().map(|m| m.lock()).collect()
    }

    fn lifetimes(&self) -> Lifetimes {
        let [i, r, t] = &self.lifetimes;
        Lifetimes { intolerance: i.load(Relaxed), reprobe: r.load(Relaxed), tolerance: t.load(Relaxed) }
    }

    /// A memory that lives as long as the process.
    pub fn in_process() -> Self {
        Self::with(Backend::Process)
    }

    /// A memory persisted in `path`, shared with other processes using the same file.
    /// A missing file is created on the first write; a corrupt, truncated or foreign
    /// one is reported (see [`Memory::problems`]) and what cannot be read is ignored.
    pub fn file(path: &Path) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Err(Error::new(Code::InvalidParameter, "empty memory file path"));
        }
        let m = Self::with(Backend::File { path: path.to_path_buf(), stamp: None });
        m.refresh();
        Ok(m)
    }

    /// A memory kept in the application's store.
    pub fn store(store: Box<dyn Store>) -> Self {
        Self::with(Backend::Store(store))
    }

    /// Fixes the clock (Unix seconds) for tests; 0 goes back to the system clock.
    pub fn set_clock(&self, now: u64) {
        self.clock.store(now, Relaxed);
    }

    /// Sets the lifetimes.
    pub fn set_lifetimes(&self, l: Lifetimes) {
        let [i, r, t] = &self.lifetimes;
        i.store(l.intolerance, Relaxed);
        r.store(l.reprobe, Relaxed);
        t.store(l.tolerance, Relaxed);
    }

    /// The current time in Unix seconds.
    pub fn now(&self) -> u64 {
        match self.clock.load(Relaxed) {
            0 => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            fixed => fixed,
        }
    }

    /// Problems met reading the file or store (corrupt lines, foreign file), oldest first.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().clone()
    }

    fn problem(&self, p: String) {
        let mut v = self.problems.lock();
        if v.len() < 100 {
            v.push(p);
        }
    }

    /// Re-reads the file when another process changed it.
    fn refresh(&self) {
        if self.kind != Kind::File {
            return;
        }
        let mut be = self.backend.lock();
        if let Backend::File { path, stamp } = &mut *be {
            let now_stamp = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
            if now_stamp.is_some() && now_stamp == *stamp {
                return;
            }
            *stamp = now_stamp;
            let disk = self.read_file(path);
            let mut maps = self.all_maps();
            for (k, r) in disk {
                let slot = maps[shard(&k)].entry(k).or_default();
                let mut merged = slot.unpack();
                merged.merge(&r);
                *slot = Packed::pack(&merged);
            }
        }
    }

    fn read_file(&self, path: &Path) -> Vec<(Key, Record)> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.problem(format!("{}: cannot read: {e}", path.display()));
                return Vec::new();
            }
        };
        let (records, problems) = parse_file(&data);
        for p in problems {
            self.problem(format!("{}{p}", path.display()));
        }
        records
    }

    /// Writes the file: an exclusive lock, a merge with what other processes wrote
    /// (the changed key's own record replaces what is on disk for it, so that facts
    /// this process dropped are not resurrected), a write to a temporary file, an
    /// atomic rename.
    fn save(&self, changed: &Key, rec: &Record) {
        let mut be = self.backend.lock();
        let Backend::File { path, stamp } = &mut *be else { return };
        if let Err(e) = self.write_file(path, changed, rec) {
            self.problem(format!("{}: cannot save: {e}", path.display()));
        }
        *stamp = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
    }

    fn write_file(&self, path: &Path, changed: &Key, rec: &Record) -> std::io::Result<()> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        lock.lock()?;
        let disk = self.read_file(path);
        let now = self.now();
        let l = self.lifetimes();
        let mut maps = self.all_maps();
        for (k, r) in disk {
            if &k != changed {
                let slot = maps[shard(&k)].entry(k).or_default();
                let mut merged = slot.unpack();
                merged.merge(&r);
                *slot = Packed::pack(&merged);
            }
        }
        if rec.is_empty() {
            maps[shard(changed)].remove(changed);
        } else {
            maps[shard(changed)].insert(changed.clone(), Packed::pack(rec));
        }
        let mut entries: Vec<(&Key, Record)> = Vec::new();
        for map in maps.iter_mut() {
            map.retain(|_, p| {
                let mut r = p.unpack();
                expire(&mut r, now, &l);
                *p = Packed::pack(&r);
                !r.is_empty()
            });
        }
        entries.extend(maps.iter().flat_map(|m| m.iter().map(|(k, p)| (k, p.unpack()))));
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::with_capacity(64 * entries.len() + 32);
        text.push_str(FILE_MAGIC);
        text.push('\n');
        for (k, r) in entries {
            let _ = writeln!(text, "{} {}", k.text(), r.fields());
        }
        drop(maps);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        drop(lock);
        Ok(())
    }

    /// The record of a peer, expired facts dropped.
    pub fn get(&self, key: &Key) -> Record {
        self.get_noting_expiry(key).0
    }

    /// The record of a peer with expired facts dropped, and the names of those facts.
    fn get_noting_expiry(&self, key: &Key) -> (Record, Vec<&'static str>) {
        self.refresh();
        let mut r = if self.kind == Kind::Store {
            let be = self.backend.lock();
            match &*be {
                Backend::Store(s) => match s.get(&key.text()) {
                    None => Record::default(),
                    Some(t) => Record::parse_fields(&t).unwrap_or_else(|e| {
                        self.problem(format!("store record for {}: {e}; ignored", key.text()));
                        Record::default()
                    }),
                },
                _ => unreachable!("kind is Store"),
            }
        } else {
            self.map(key).get(key).map(Packed::unpack).unwrap_or_default()
        };
        if r.is_empty() {
            return (r, Vec::new());
        }
        let before = r.clone();
        expire(&mut r, self.now(), &self.lifetimes());
        let mut gone = Vec::new();
        if before.tolerant.is_some() && r.tolerant.is_none() {
            gone.push("tolerance");
        }
        if before.intolerant.is_some() && r.intolerant.is_none() {
            gone.push("intolerance");
        }
        if before.pinned.is_some() && r.pinned.is_none() {
            gone.push("pin");
        }
        if before.sni_off.is_some() && r.sni_off.is_none() {
            gone.push("sni-off");
        }
        (r, gone)
    }

    /// Changes a peer's record and writes it through to the file or store.
    pub fn update(&self, key: &Key, f: impl FnOnce(&mut Record, u64)) {
        let now = self.now();
        let mut r = self.get(key);
        f(&mut r, now);
        let is_store = self.kind == Kind::Store && {
            let be = self.backend.lock();
            if let Backend::Store(s) = &*be {
                if r.is_empty() {
                    s.delete(&key.text());
                } else {
                    s.put(&key.text(), &r.fields());
                }
                true
            } else {
                false
            }
        };
        if is_store {
            return;
        }
        if self.kind == Kind::File {
            // Write-through: another process must not lose what this one learnt.
            self.save(key, &r);
        } else if r.is_empty() {
            self.map(key).remove(key);
        } else {
            self.map(key).insert(key.clone(), Packed::pack(&r));
        }
    }

    /// Forgets a peer entirely.
    pub fn forget(&self, key: &Key) {
        self.update(key, |r, _| *r = Record::default());
    }

    /// Every record (file and process memory); None for a store, which cannot be listed.
    pub fn list(&self) -> Option<Vec<(Key, Record)>> {
        if self.kind == Kind::Store {
            return None;
        }
        self.refresh();
        let now = self.now();
        let l = self.lifetimes();
        let mut v: Vec<(Key, Record)> = self
            .all_maps()
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, p)| {
                let mut r = p.unpack();
                expire(&mut r, now, &l);
                (k.clone(), r)
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Some(v)
    }

    /// Where to start with a peer.
    pub fn plan(&self, key: &Key) -> Plan {
        let (r, expired) = self.get_noting_expiry(key);
        let now = self.now();
        let l = self.lifetimes();
        let mut plan = Plan {
            rung: Rung::Modern,
            sni: r.sni_off.is_none(),
            pinned: r.pinned.is_some(),
            reprobe: false,
            incompatible: false,
            expired,
        };
        if let Some(i) = r.intolerant {
            if now.saturating_sub(i.last) >= l.reprobe {
                plan.reprobe = true;
            } else if i.class == FailureClass::Incompatible {
                plan.incompatible = true;
            } else {
                plan.rung = match r.tolerant {
                    Some((t, _)) if t > i.rung => t,
                    _ => Rung::ALL.get(i.rung as usize + 1).copied().unwrap_or(Rung::Tls12),
                };
            }
        }
        plan
    }

    /// Whether falling back from `rung` is allowed: not when the peer accepted this
    /// rung or a more modern one within the tolerance lifetime (a possible attack).
    pub fn fallback_allowed(&self, key: &Key, rung: Rung) -> bool {
        match self.get(key).tolerant {
            Some((t, _)) => t > rung,
            None => true,
        }
    }

    /// A handshake succeeded at `rung`.
    pub fn record_success(&self, key: &Key, rung: Rung, sni: bool, pq: bool, tls13: bool) {
        self.update(key, |r, now| {
            r.tolerant = Some((rung, now));
            r.pinned = Some(now);
            r.pq = Some(pq);
            if tls13 {
                r.tls13 = Some(now);
            }
            if sni {
                r.sni_off = None;
            }
            // The failure is kept only while it is still below what just worked.
            if r.intolerant.is_some_and(|i| i.rung >= rung) {
                r.intolerant = None;
            }
        });
    }

    /// A first flight failed at `rung` with `class`.
    pub fn record_intolerance(&self, key: &Key, rung: Rung, class: FailureClass) {
        self.update(key, |r, now| {
            let (count, first) = match r.intolerant {
                Some(i) => (i.count.saturating_add(1), i.first),
                None => (1, now),
            };
            let rung = r.intolerant.map_or(rung, |i| if now.saturating_sub(i.last) < 86400 { i.rung.max(rung) } else { rung });
            r.intolerant = Some(Intolerance { rung, class, count, first, last: now });
        });
    }

    /// Nothing rustls offers works with the peer (it picked TLS 1.1, or every rung
    /// failed): remembered as incompatible, which is not intolerance of a rung, so no
    /// later contact starts lower than it needs to.
    pub fn record_incompatible(&self, key: &Key) {
        self.update(key, |r, now| {
            let (count, first) = match r.intolerant {
                Some(i) if i.class == FailureClass::Incompatible => (i.count.saturating_add(1), i.first),
                _ => (1, now),
            };
            r.intolerant = Some(Intolerance { rung: Rung::Tls12, class: FailureClass::Incompatible, count, first, last: now });
        });
    }

    /// The peer refused our SNI.
    pub fn record_sni_off(&self, key: &Key) {
        self.update(key, |r, now| r.sni_off = Some(now));
    }

    /// The peer proved it speaks TLS 1.3 (the downgrade sentinel): its intolerance was
    /// someone else's doing and is forgotten.
    pub fn record_tls13_capable(&self, key: &Key) {
        self.update(key, |r, now| {
            r.tls13 = Some(now);
            r.intolerant = None;
        });
    }
}

/// Drops facts past their lifetime.
fn expire(r: &mut Record, now: u64, l: &Lifetimes) {
    let old = |t: u64, life: u64| now.saturating_sub(t) >= life;
    if r.intolerant.is_some_and(|i| old(i.last, l.intolerance)) {
        r.intolerant = None;
    }
    if r.sni_off.is_some_and(|t| old(t, l.intolerance)) {
        r.sni_off = None;
    }
    if r.tolerant.is_some_and(|(_, t)| old(t, l.tolerance)) {
        r.tolerant = None;
    }
    if r.pinned.is_some_and(|t| old(t, l.tolerance)) {
        r.pinned = None;
        r.pq = None;
    }
    if r.tls13.is_some_and(|t| old(t, l.tolerance)) {
        r.tls13 = None;
    }
}
