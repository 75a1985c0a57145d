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

/// First line of a memory file.
pub const FILE_MAGIC: &str = "mailtls-memory 1";

/// A peer: (protocol, host, port). The host is compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The protocol.
    pub proto: Proto,
    /// The host, lower-cased.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Key {
    /// A key; the host is lower-cased.
    pub fn new(proto: Proto, host: &str, port: u16) -> Self {
        Key { proto, host: host.to_ascii_lowercase(), port }
    }

    /// The text form used in files and stores: `smtp mx.example.org 25`.
    pub fn text(&self) -> String {
        format!("{} {} {}", self.proto.name(), self.host, self.port)
    }
}

/// The intolerance part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intolerance {
    /// The most conservative rung that failed.
    pub rung: Rung,
    /// Why.
    pub class: FailureClass,
    /// How often.
    pub count: u32,
    /// First seen (Unix seconds).
    pub first: u64,
    /// Last seen (Unix seconds).
    pub last: u64,
}

/// What is known of one peer. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The most modern rung that worked, and when it last did.
    pub tolerant: Option<(Rung, u64)>,
    /// The rung that failed, why, how often and when.
    pub intolerant: Option<Intolerance>,
    /// SNI must be left out (after `unrecognized_name`), since when.
    pub sni_off: Option<u64>,
    /// TLS was negotiated with this peer, last time: a peer that stops offering
    /// STARTTLS is a stripping suspect.
    pub pinned: Option<u64>,
    /// Whether the last TLS session used a post-quantum group.
    pub pq: Option<bool>,
    /// The peer proved it speaks TLS 1.3 (negotiated, or the downgrade sentinel), when.
    pub tls13: Option<u64>,
}

impl Record {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        *self == Record::default()
    }

    /// The record as `key=value` fields separated by spaces (the file format).
    pub fn fields(&self) -> String {
        let mut s = String::new();
        if let Some((r, t)) = self.tolerant {
            let _ = write!(s, " tolerant={}@{t}", r.name());
        }
        if let Some(i) = self.intolerant {
            let _ = write!(s, " intolerant={}@{},{},{},{}", i.rung.name(), i.last, i.class.name(), i.count, i.first);
        }
        if let Some(t) = self.sni_off {
            let _ = write!(s, " sni-off@{t}");
        }
        if let Some(t) = self.pinned {
            let _ = write!(s, " pinned@{t}");
        }
        if let Some(pq) = self.pq {
            let _ = write!(s, " pq={}", if pq { "yes" } else { "no" });
        }
        if let Some(t) = self.tls13 {
            let _ = write!(s, " tls13@{t}");
        }
        s.trim_start().to_string()
    }

    /// Parses the fields written by [`Record::fields`].
    pub fn parse_fields(text: &str) -> std::result::Result<Record, String> {
        let mut r = Record::default();
        for field in text.split_ascii_whitespace() {
            let (name, value) = field.split_once(['=', '@']).ok_or_else(|| format!("bad field {field:?}"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("bad number in {field:?}"));
            match name {
                "tolerant" => {
                    let (rung, t) = value.split_once('@').ok_or_else(|| format!("bad field {field:?}"))?;
                    r.tolerant = Some((rung_by_name(rung)?, num(t)?));
                }
                "intolerant" => {
                    let (rung, rest) = value.split_once('@').ok_or_else(|| format!("bad field {field:?}"))?;
                    let parts: Vec<&str> = rest.split(',').collect();
                    if parts.len() != 4 {
                        return Err(format!("bad field {field:?}"));
                    }
                    r.intolerant = Some(Intolerance {
                        rung: rung_by_name(rung)?,
                        last: num(parts[0])?,
                        class: class_by_name(parts[1])?,
                        count: parts[2].parse().map_err(|_| format!("bad count in {field:?}"))?,
                        first: num(parts[3])?,
                    });
                }
                "sni-off" => r.sni_off = Some(num(value)?),
                "pinned" => r.pinned = Some(num(value)?),
                "tls13" => r.tls13 = Some(num(value)?),
                "pq" => {
                    r.pq = Some(match value {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(format!("bad field {field:?}")),
                    })
                }
                _ => return Err(format!("unknown field {field:?}")),
            }
        }
        Ok(r)
    }

    /// Field-wise union with another view of the same peer: the newer fact wins.
    pub fn merge(&mut self, other: &Record) {
        fn newer<T: Copy>(a: Option<(T, u64)>, b: Option<(T, u64)>) -> Option<(T, u64)> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y.1 > x.1 { y } else { x }),
                (x, None) => x,
                (None, y) => y,
            }
        }
        self.tolerant = newer(self.tolerant, other.tolerant);
        self.intolerant = match (self.intolerant, other.intolerant) {
            (Some(a), Some(b)) => Some(if b.last > a.last { b } else { a }),
            (a, None) => a,
            (None, b) => b,
        };
        self.sni_off = self.sni_off.max(other.sni_off);
        self.pinned = self.pinned.max(other.pinned);
        self.tls13 = self.tls13.max(other.tls13);
        if other.pq.is_some() && (self.pq.is_none() || other.pinned > self.pinned) {
            self.pq = other.pq;
        }
    }
}

fn rung_by_name(n: &str) -> std::result::Result<Rung, String> {
    Rung::ALL.iter().copied().find(|r| r.name() == n).ok_or_else(|| format!("unknown rung {n:?}"))
}

fn class_by_name(n: &str) -> std::result::Result<FailureClass, String> {
    FailureClass::ALL.iter().copied().find(|c| c.name() == n).ok_or_else(|| format!("unknown class {n:?}"))
}

fn proto_by_name(n: &str) -> Option<Proto> {
    (0..6).filter_map(Proto::from_u32).find(|p| p.name() == n)
}

/// Parses one line of a memory file: `smtp mx.example.org 25 tolerant=modern@1700000000 ...`.
pub fn parse_line(line: &str) -> std::result::Result<(Key, Record), String> {
    let mut it = line.splitn(4, ' ');
    let proto = it.next().and_then(proto_by_name).ok_or("unknown protocol")?;
    let host = it.next().filter(|h| !h.is_empty()).ok_or("no host")?;
    let port: u16 = it.next().and_then(|p| p.parse().ok()).ok_or("bad port")?;
    let rec = Record::parse_fields(it.next().unwrap_or(""))?;
    Ok((Key::new(proto, host, port), rec))
}

/// Parses the text of a memory file: the records it holds, and the problems met (each
/// starting with `:LINE: ` or `: `, to follow the file's name). A foreign, non-UTF-8 or
/// headerless file gives no record; a bad line is skipped; a last line without its
/// line feed (a writer cut short) is ignored.
pub fn parse_file(data: &[u8]) -> (Vec<(Key, Record)>, Vec<String>) {
    let mut problems = Vec::new();
    let Ok(text) = std::str::from_utf8(data) else {
        problems.push(": not a memory file (not UTF-8); ignored".to_string());
        return (Vec::new(), problems);
    };
    let mut lines = text.split('\n');
    if lines.next() != Some(FILE_MAGIC) {
        problems.push(format!(": not a memory file (no {FILE_MAGIC:?} header); ignored"));
        return (Vec::new(), problems);
    }
    let mut out = Vec::new();
    let complete = text.ends_with('\n');
    let all: Vec<&str> = lines.collect();
    for (i, line) in all.iter().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !complete && i == all.len() - 1 {
            problems.push(": truncated last line ignored".to_string());
            break;
        }
        match parse_line(line) {
            Ok(kr) => out.push(kr),
            Err(e) => problems.push(format!(":{}: {e}; line ignored", i + 2)),
        }
    }
    (out, problems)
}

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

/// A record as the process map keeps it: 32 bytes instead of about 100 (times as
/// u32 Unix seconds, good to 2106, later ones saturate; which facts are present in a
/// bit set). With 1,000,000 peers that is what keeps an entry under 256 bytes.
#[derive(Clone, Copy, Default)]
struct Packed {
    tolerant_at: u32,
    intolerant_first: u32,
    intolerant_last: u32,
    intolerant_count: u32,
    sni_off: u32,
    pinned: u32,
    tls13: u32,
    /// Bits: TOLERANT, INTOLERANT, SNI_OFF, PINNED, TLS13, PQ_KNOWN, PQ.
    flags: u8,
    tolerant_rung: u8,
    intolerant_rung: u8,
    intolerant_class: u8,
}

const TOLERANT: u8 = 1;
const INTOLERANT: u8 = 2;
const SNI_OFF: u8 = 4;
const PINNED: u8 = 8;
const TLS13: u8 = 16;
const PQ_KNOWN: u8 = 32;
const PQ: u8 = 64;

fn secs32(t: u64) -> u32 {
    t.min(u32::MAX as u64) as u32
}

impl Packed {
    fn pack(r: &Record) -> Packed {
        let mut p = Packed::default();
        let mut put = |bit: u8, v: Option<u64>, slot: &mut u32| {
            if let Some(t) = v {
                p.flags |= bit;
                *slot = secs32(t);
            }
        };
        let (mut a, mut b, mut c, mut d) = (0, 0, 0, 0);
        put(TOLERANT, r.tolerant.map(|t| t.1), &mut a);
        put(SNI_OFF, r.sni_off, &mut b);
        put(PINNED, r.pinned, &mut c);
        put(TLS13, r.tls13, &mut d);
        (p.tolerant_at, p.sni_off, p.pinned, p.tls13) = (a, b, c, d);
        if let Some((rung, _)) = r.tolerant {
            p.tolerant_rung = rung as u8;
        }
        if let Some(i) = r.intolerant {
            p.flags |= INTOLERANT;
            p.intolerant_rung = i.rung as u8;
            p.intolerant_class = i.class as u8;
            p.intolerant_count = i.count;
            p.intolerant_first = secs32(i.first);
            p.intolerant_last = secs32(i.last);
        }
        if let Some(pq) = r.pq {
            p.flags |= PQ_KNOWN | if pq { PQ } else { 0 };
        }
        p
    }

    fn unpack(&self) -> Record {
        let has = |bit: u8| self.flags & bit != 0;
        let at = |bit: u8, t: u32| has(bit).then_some(t as u64);
        Record {
            tolerant: at(TOLERANT, self.tolerant_at).map(|t| (Rung::ALL[self.tolerant_rung as usize], t)),
            intolerant: has(INTOLERANT).then(|| Intolerance {
                rung: Rung::ALL[self.intolerant_rung as usize],
                class: FailureClass::ALL[self.intolerant_class as usize],
                count: self.intolerant_count,
                first: self.intolerant_first as u64,
                last: self.intolerant_last as u64,
            }),
            sni_off: at(SNI_OFF, self.sni_off),
            pinned: at(PINNED, self.pinned),
            pq: has(PQ_KNOWN).then_some(has(PQ)),
            tls13: at(TLS13, self.tls13),
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn packed_records_keep_every_fact() {
        use super::{FailureClass, Rung};
        assert_eq!(std::mem::size_of::<Packed>(), 32);
        let full = Record {
            tolerant: Some((Rung::Classic, 2_000_000_001)),
            intolerant: Some(Intolerance { rung: Rung::Tls12, class: FailureClass::Other, count: 7, first: 5, last: 4_000_000_000 }),
            sni_off: Some(0),
            pinned: Some(1),
            pq: Some(false),
            tls13: Some(3),
        };
        for r in [Record::default(), full, Record { pq: Some(true), ..Record::default() }] {
            assert_eq!(Packed::pack(&r).unpack(), r);
        }
        let late = Record { pinned: Some(u64::MAX), ..Record::default() };
        assert_eq!(Packed::pack(&late).unpack().pinned, Some(u32::MAX as u64), "saturates in 2106");
    }

    use super::*;

    fn key() -> Key {
        Key::new(Proto::Smtp, "MX.Example.org", 25)
    }

    #[test]
    fn record_text_round_trips() {
        let r = Record {
            tolerant: Some((Rung::Classic, 1_700_000_000)),
            intolerant: Some(Intolerance { rung: Rung::Modern, class: FailureClass::Intolerance, count: 3, first: 1, last: 2 }),
            sni_off: Some(5),
            pinned: Some(6),
            pq: Some(false),
            tls13: Some(7),
        };
        assert_eq!(Record::parse_fields(&r.fields()).unwrap(), r);
        let (k, r2) = parse_line(&format!("{} {}", key().text(), r.fields())).unwrap();
        assert_eq!((k, r2), (key(), r));
        assert!(parse_line("smtp host").is_err());
        assert!(parse_line("smtp host 25 bogus=1").is_err());
    }

    #[test]
    fn intolerance_picks_the_rung_then_reprobes_then_expires() {
        let m = Memory::in_process();
        m.set_clock(1_000_000);
        m.record_intolerance(&key(), Rung::Modern, FailureClass::Intolerance);
        m.record_success(&key(), Rung::Compact, true, false, true);
        assert_eq!(m.plan(&key()).rung, Rung::Compact);
        m.set_clock(1_000_000 + 86400);
        let p = m.plan(&key());
        assert_eq!((p.rung, p.reprobe), (Rung::Modern, true));
        m.set_clock(1_000_000 + 8 * 86400);
        assert!(m.get(&key()).intolerant.is_none());
        assert!(m.get(&key()).pinned.is_some());
        m.set_clock(1_000_000 + 61 * 86400);
        assert!(m.get(&key()).is_empty());
    }

    #[test]
    fn fresh_tolerance_blocks_fallback() {
        let m = Memory::in_process();
        m.record_success(&key(), Rung::Modern, true, true, true);
        assert!(!m.fallback_allowed(&key(), Rung::Modern));
        let m = Memory::in_process();
        m.record_success(&key(), Rung::Classic, true, false, true);
        assert!(m.fallback_allowed(&key(), Rung::Modern));
        assert!(!m.fallback_allowed(&key(), Rung::Classic));
    }

    #[test]
    fn sentinel_forgets_intolerance() {
        let m = Memory::in_process();
        m.record_intolerance(&key(), Rung::Classic, FailureClass::Intolerance);
        m.record_tls13_capable(&key());
        assert!(m.get(&key()).intolerant.is_none());
        assert!(m.get(&key()).tls13.is_some());
    }

    fn tmpfile(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailtls-mem-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn file_survives_and_two_writers_lose_nothing() {
        let p = tmpfile("two");
        let a = Memory::file(&p).unwrap();
        let b = Memory::file(&p).unwrap();
        for i in 0..20u16 {
            a.record_success(&Key::new(Proto::Smtp, "a.example", i), Rung::Modern, true, true, true);
            b.record_intolerance(&Key::new(Proto::Smtp, "b.example", i), Rung::Modern, FailureClass::Intolerance);
        }
        let c = Memory::file(&p).unwrap();
        assert_eq!(c.list().unwrap().len(), 40, "{:?}", c.problems());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(FILE_MAGIC));
        c.forget(&Key::new(Proto::Smtp, "a.example", 3));
        assert_eq!(Memory::file(&p).unwrap().list().unwrap().len(), 39);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn corrupt_or_foreign_files_are_reported_and_ignored() {
        let p = tmpfile("bad");
        std::fs::write(&p, b"\x00\x01garbage").unwrap();
        let m = Memory::file(&p).unwrap();
        assert!(m.list().unwrap().is_empty());
        assert_eq!(m.problems().len(), 1);
        std::fs::write(&p, format!("{FILE_MAGIC}\nsmtp ok.example 25 pinned@5\nsmtp bad\nsmtp cut.example 25 pinn")).unwrap();
        let m = Memory::file(&p).unwrap();
        m.set_clock(10);
        assert_eq!(m.list().unwrap().len(), 1);
        assert_eq!(m.problems().len(), 2, "{:?}", m.problems());
        // Writing repairs the file.
        m.record_sni_off(&key());
        let again = Memory::file(&p).unwrap();
        assert!(again.problems().is_empty(), "{:?}", again.problems());
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_store_gets_every_change() {
        struct S(Mutex<HashMap<String, String>>);
        impl Store for S {
            fn get(&self, k: &str) -> Option<String> {
                self.0.lock().get(k).cloned()
            }
            fn put(&self, k: &str, v: &str) {
                self.0.lock().insert(k.into(), v.into());
            }
            fn delete(&self, k: &str) {
                self.0.lock().remove(k);
            }
        }
        let m = Memory::store(Box::new(S(Mutex::new(HashMap::new()))));
        m.record_success(&key(), Rung::Classic, true, false, false);
        assert_eq!(m.get(&key()).tolerant.map(|t| t.0), Some(Rung::Classic));
        m.forget(&key());
        assert!(m.get(&key()).is_empty());
    }
}
