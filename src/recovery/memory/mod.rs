//! The intolerance memory: what each peer tolerated and failed on, whether it ever
//! did TLS (the pin), kept across connections, processes and restarts.
//!
//! Keyed by (protocol, host, port). Intolerance expires and is re-probed; tolerance
//! and pins live longer and are refreshed on success. Optional persistence in an LMDB
//! database shared by every process (`db`: readers never block, a change is one
//! transaction on one record), or in a store the application provides. The version-1
//! text file (`text`) is what export and import speak, what the database converts on
//! first open, and the baseline the benchmarks measure the database against.

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

mod db;
mod packed;
mod record;
mod text;
#[cfg(test)]
mod tests;

use packed::*;
pub use db::DB_MAGIC;
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
/// An Err is a failure of the store (it is reported in [`Memory::problems`]): a get
/// that failed is not "no record", and a change is then not written over a record
/// that could not be read.
pub trait Store: Send + Sync {
    /// The record text for a key: Ok(None) when there is none.
    fn get(&self, key: &str) -> std::result::Result<Option<String>, String>;
    /// Stores the record text for a key.
    fn put(&self, key: &str, value: &str) -> std::result::Result<(), String>;
    /// Deletes a key.
    fn delete(&self, key: &str) -> std::result::Result<(), String>;
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
    Db(std::sync::Arc<db::DbFile>),
    Text(Mutex<text::TextFile>),
    Store(Mutex<Box<dyn Store>>),
}

/// Shards of the process map: lookups from several threads rarely meet on one lock.
const SHARDS: usize = 16;

/// The memory: thread-safe, shared by every session of the configs that use it.
/// A lookup in process memory takes one lock, of one shard of the map; in the
/// database, one read transaction; the backend, the clock and the lifetimes are read
/// without locks.
pub struct Memory {
    /// The process map (also the text backend's copy of its file).
    maps: [Mutex<HashMap<Key, Packed>>; SHARDS],
    backend: Backend,
    /// Unix seconds fixed by `set_clock`, 0 for the system clock.
    clock: AtomicU64,
    /// intolerance, reprobe, tolerance (seconds).
    lifetimes: [AtomicU64; 3],
    problems: Mutex<Vec<String>>,
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
        let l = Lifetimes::default();
        Memory {
            maps: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            backend,
            clock: AtomicU64::new(0),
            lifetimes: [AtomicU64::new(l.intolerance), AtomicU64::new(l.reprobe), AtomicU64::new(l.tolerance)],
            problems: Mutex::new(Vec::new()),
        }
    }

    fn map(&self, key: &Key) -> parking_lot::MutexGuard<'_, HashMap<Key, Packed>> {
        self.maps[shard(key)].lock()
    }

    /// Every shard locked, in order (whole-map work: text file merge and save, listing).
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

    /// A memory persisted in the database at `path` (created if missing, mode 0600),
    /// shared with every process that opens the same file. A version-1 text file there
    /// is converted (the text kept as `PATH.v1`); a corrupt, truncated or foreign file
    /// is set aside as `PATH.corrupt-UNIXTIME` and reported (see [`Memory::problems`]).
    /// Err only when no database can be opened there at all (a directory that does
    /// not exist or cannot be written).
    pub fn file(path: &Path) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Err(Error::new(Code::InvalidParameter, "empty memory file path"));
        }
        let opened = db::DbFile::open(path, unix_now()).map_err(|e| Error::new(Code::Io, e))?;
        let m = Self::with(Backend::Db(opened.file));
        for p in opened.problems {
            m.problem(p);
        }
        Ok(m)
    }

    /// A memory in the version-1 text file at `path`, rewritten whole (under a lock, by
    /// atomic rename) at every change and re-read whenever another process changed it.
    /// Its cost grows with the number of peers: it is kept as the baseline the
    /// benchmarks measure [`Memory::file`] against, not for use.
    pub fn text_file(path: &Path) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Err(Error::new(Code::InvalidParameter, "empty memory file path"));
        }
        let m = Self::with(Backend::Text(Mutex::new(text::TextFile::new(path))));
        m.refresh();
        Ok(m)
    }

    /// A memory kept in the application's store.
    pub fn store(store: Box<dyn Store>) -> Self {
        Self::with(Backend::Store(Mutex::new(store)))
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
            0 => unix_now(),
            fixed => fixed,
        }
    }

    /// Problems met with the database, file or store (corrupt records, a foreign file
    /// set aside, a failed write), oldest first.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().clone()
    }

    fn problem(&self, p: String) {
        let mut v = self.problems.lock();
        if v.len() < 100 {
            v.push(p);
        }
    }

    /// The record of a peer, expired facts dropped.
    pub fn get(&self, key: &Key) -> Record {
        self.get_noting_expiry(key).0
    }

    /// The record of a peer with expired facts dropped, and the names of those facts.
    fn get_noting_expiry(&self, key: &Key) -> (Record, Vec<&'static str>) {
        let mut r = self.stored(key).unwrap_or_default();
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

    /// The record as the backend holds it (nothing expired yet); None when the
    /// backend could not be read (reported).
    fn stored(&self, key: &Key) -> Option<Record> {
        let found = match &self.backend {
            Backend::Store(s) => match s.lock().get(&key.text()) {
                Ok(found) => found.map(|t| {
                    Record::parse_fields(&t).unwrap_or_else(|e| {
                        self.problem(format!("store record for {}: {e}; ignored", key.text()));
                        Record::default()
                    })
                }),
                Err(e) => {
                    self.problem(format!("store get {}: {e}", key.text()));
                    return None;
                }
            },
            Backend::Db(db) => db.get(key).unwrap_or_else(|e| {
                self.problem(e);
                None
            }),
            Backend::Text(_) => {
                self.refresh();
                self.map(key).get(key).map(Packed::unpack)
            }
            Backend::Process => self.map(key).get(key).map(Packed::unpack),
        };
        Some(found.unwrap_or_default())
    }

    /// Changes a peer's record and writes it through to the database, file or store.
    pub fn update(&self, key: &Key, f: impl FnOnce(&mut Record, u64)) {
        let now = self.now();
        if let Backend::Db(db) = &self.backend {
            // Read, change and write in one transaction of the database.
            let l = self.lifetimes();
            match db.update(key, now, |r| expire(r, now, &l), f) {
                Ok(problems) => problems.into_iter().for_each(|p| self.problem(p)),
                Err(e) => self.problem(format!("{e}; the change to {} is lost", key.text())),
            }
            return;
        }
        let Some(mut r) = self.stored(key) else {
            // Writing now would replace a record that exists but could not be read.
            self.problem(format!("the change to {} is not written: its record could not be read", key.text()));
            return;
        };
        expire(&mut r, now, &self.lifetimes());
        f(&mut r, now);
        match &self.backend {
            Backend::Store(s) => {
                let s = s.lock();
                let done = if r.is_empty() { s.delete(&key.text()) } else { s.put(&key.text(), &r.fields()) };
                if let Err(e) = done {
                    drop(s);
                    self.problem(format!("store {} {}: {e}", if r.is_empty() { "delete" } else { "put" }, key.text()));
                }
            }
            // Write-through: another process must not lose what this one learnt.
            Backend::Text(t) => self.save(t, key, &r),
            _ if r.is_empty() => {
                self.map(key).remove(key);
            }
            _ => {
                self.map(key).insert(key.clone(), Packed::pack(&r));
            }
        }
    }

    /// Forgets a peer entirely.
    pub fn forget(&self, key: &Key) {
        self.update(key, |r, _| *r = Record::default());
    }

    /// Every record (database, file or process memory), expired facts dropped, in key
    /// order; None for a store, which cannot be listed.
    pub fn list(&self) -> Option<Vec<(Key, Record)>> {
        let now = self.now();
        let l = self.lifetimes();
        let mut v: Vec<(Key, Record)> = match &self.backend {
            Backend::Store(_) => return None,
            Backend::Db(db) => match db.all() {
                Ok((all, bad)) => {
                    bad.into_iter().for_each(|k| self.problem(format!("record for {k}: a value this version cannot read; not listed")));
                    all
                }
                Err(e) => {
                    self.problem(e);
                    Vec::new()
                }
            },
            Backend::Text(_) | Backend::Process => {
                self.refresh();
                self.all_maps().iter().flat_map(|m| m.iter()).map(|(k, p)| (k.clone(), p.unpack())).collect()
            }
        };
        v.iter_mut().for_each(|(_, r)| expire(r, now, &l));
        v.retain(|(_, r)| !r.is_empty());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Some(v)
    }

    /// Every record in the version-1 text format (what `import_text` reads); None for
    /// a store.
    pub fn export_text(&self) -> Option<String> {
        let mut text = String::from(FILE_MAGIC);
        text.push('\n');
        for (k, r) in self.list()? {
            let _ = writeln!(text, "{} {}", k.text(), r.fields());
        }
        Some(text)
    }

    /// Writes [`Memory::export_text`] to `path` (mode 0600, by rename); the count.
    pub fn export_file(&self, path: &Path) -> Result<usize> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let text = self.export_text().ok_or_else(|| Error::new(Code::Unsupported, "a memory on an application store cannot be listed"))?;
        let tmp = PathBuf::from(format!("{}.tmp.{}", path.display(), std::process::id()));
        let io = |e: std::io::Error| Error::new(Code::Io, format!("{}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        Ok(text.lines().count() - 1)
    }

    /// [`Memory::import_text`] of the file at `path`.
    pub fn import_file(&self, path: &Path) -> Result<usize> {
        let data = std::fs::read(path).map_err(|e| Error::new(Code::Io, format!("{}: {e}", path.display())))?;
        Ok(self.import_text(&data))
    }

    /// Merges the records of a version-1 text (an export, or an old memory file) into
    /// this memory: for each peer the newer fact wins. Lines that do not parse are
    /// skipped and reported in [`Memory::problems`]. Returns how many records were read.
    pub fn import_text(&self, text: &[u8]) -> usize {
        let (records, bad) = parse_file(text);
        bad.into_iter().for_each(|p| self.problem(format!("import{p}")));
        if let Backend::Db(db) = &self.backend {
            if let Err(e) = db.merge_all(&records) {
                self.problem(format!("{e}; the import is lost"));
                return 0;
            }
        } else {
            for (k, r) in &records {
                self.update(k, |mine, _| mine.merge(r));
            }
        }
        records.len()
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

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
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
