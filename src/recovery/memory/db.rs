//! The memory database: one LMDB file that every process of an MTA shares. Readers
//! never block and are never blocked; a change is one write transaction that reads,
//! changes and writes one record; a process killed at any point loses nothing it
//! committed. What opening finds is input like any other: a version-1 text file is
//! converted, a foreign or damaged file is set aside (renamed) and reported, never fatal.
//!
//! Layout: the unnamed database; a record's key is its text (`smtp mx.example.org
//! 25`), its value `Packed::to_bytes` (33 bytes). Keys starting with NUL are the
//! database's own: `\0mailtls` holds [`DB_MAGIC`], `\0sweep` where the sweep of
//! expired records stopped. Every 16th change of a process also looks at the next 8
//! records and deletes the expired ones, so peers never contacted again do not stay
//! forever, at no pause for anyone.
//!
//! It may not touch: sessions, sockets, pointers (LMDB itself is behind `ffi::lmdb`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use super::packed::Packed;
use super::record::{parse_file, Key, Record, FILE_MAGIC};
use crate::ffi::lmdb::{Db, DbError};

/// The value of `\0mailtls`: what wrote the database.
pub const DB_MAGIC: &[u8] = b"mailtls-memory 2";
const META_MAGIC: &[u8] = b"\0mailtls";
const META_SWEEP: &[u8] = b"\0sweep";

/// The map: address space, not disk (the file grows with what it holds, about 110
/// bytes a peer). 4 GiB is some 30 million peers.
pub(super) const MAP_SIZE: usize = if cfg!(target_pointer_width = "64") { 4 << 30 } else { 512 << 20 };
/// Reader slots: one per read in progress, across every process (LMDB's default is 126;
/// an MTA may run hundreds of processes).
const MAX_READERS: u32 = 1024;
/// Every how many changes a process sweeps, and how many records each sweep looks at.
const SWEEP_EVERY: u64 = 16;
const SWEEP_RECORDS: usize = 8;
/// At most every how many seconds a process that changed something asks for an fsync.
const SYNC_SECS: u64 = 30;

/// The database of a memory, reopened by a fork() child before its first use.
pub(super) struct DbFile {
    path: PathBuf,
    db: RwLock<Db>,
    changes: AtomicU64,
    synced_at: AtomicU64,
}

/// What opening found, for the memory's problem list.
pub(super) struct Opened {
    pub(super) file: Arc<DbFile>,
    pub(super) problems: Vec<String>,
}

/// The databases open in this process, by canonical path: LMDB allows one environment
/// per file per process (closing a second one would drop the first one's locks), so
/// every memory on one file shares one.
static OPEN: Mutex<Vec<(PathBuf, Weak<DbFile>)>> = Mutex::new(Vec::new());

/// `path` made absolute with its directory's links resolved (the file may not exist).
fn canonical(path: &Path) -> std::result::Result<PathBuf, String> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir.join(name))
}

/// A failure of the database during use: the memory goes on without it (a lookup
/// finds nothing, a change is lost) and says so.
pub(super) type DbResult<T> = std::result::Result<T, String>;

/// Every record, and the keys of the values that could not be read.
pub(super) type All = (Vec<(Key, Record)>, Vec<String>);

fn describe(path: &Path, e: DbError) -> String {
    format!("{}: {e}", path.display())
}

impl DbFile {
    /// Opens the database at `path` under the setup lock (`path` with the extension
    /// `lock`, the lock the version-1 text format used), converting or setting aside
    /// what it finds.
    pub(super) fn open(path: &Path, now: u64) -> std::result::Result<Opened, String> {
        let path = &canonical(path)?;
        let mut open = OPEN.lock();
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(file) = open.iter().find(|(p, _)| p == path).and_then(|(_, w)| w.upgrade()) {
            return Ok(Opened { file, problems: Vec::new() });
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: cannot open the lock file: {e}", lock_path.display()))?;
        lock.lock().map_err(|e| format!("{}: cannot lock: {e}", lock_path.display()))?;
        let mut problems = Vec::new();
        let db = setup(path, now, &mut problems)?;
        drop(lock);
        tighten_mode(path);
        let file = Arc::new(DbFile {
            path: path.to_path_buf(),
            db: RwLock::new(db),
            changes: AtomicU64::new(0),
            synced_at: AtomicU64::new(now),
        });
        open.push((path.to_path_buf(), Arc::downgrade(&file)));
        Ok(Opened { file, problems })
    }

    /// Runs `f` with the process's own environment (reopened after fork()).
    fn with<R>(&self, f: impl FnOnce(&Db) -> std::result::Result<R, DbError>) -> DbResult<R> {
        {
            let db = self.db.read();
            if !db.inherited() {
                return f(&db).map_err(|e| describe(&self.path, e));
            }
        }
        let mut db = self.db.write();
        if db.inherited() {
            // The inherited handle is dropped without closing (see `ffi::lmdb`).
            *db = Db::open(&self.path, MAP_SIZE, MAX_READERS).map_err(|e| describe(&self.path, e))?;
        }
        f(&db).map_err(|e| describe(&self.path, e))
    }

    /// The stored record of `key`; Err(text) for a value this version cannot read.
    pub(super) fn get(&self, key: &Key) -> DbResult<Option<Record>> {
        let k = key.text();
        self.with(|db| db.read(|r| r.get(k.as_bytes()).map(|v| v.map(decode))))
            .and_then(|r| r.map_err(|e| describe(&self.path, e)))
            .and_then(|v| v.transpose().map_err(|e| format!("{}: record for {k}: {e}; ignored", self.path.display())))
    }

    /// Reads, changes and writes the record of `key` in one write transaction: two
    /// processes changing one peer at once both keep their facts. `prepare` drops
    /// expired facts; `f` gets the record and the time.
    pub(super) fn update(&self, key: &Key, now: u64, prepare: impl Fn(&mut Record), f: impl FnOnce(&mut Record, u64)) -> DbResult<Vec<String>> {
        let k = key.text();
        let sweep = self.changes.fetch_add(1, Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let mut problems = Vec::new();
        self.with(|db| {
            db.write(|w| {
                let mut rec = match w.get(k.as_bytes())?.map(|v| decode(&v)) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        problems.push(format!("record for {k}: {e}; replaced"));
                        Record::default()
                    }
                    None => Record::default(),
                };
                prepare(&mut rec);
                f(&mut rec, now);
                if rec.is_empty() {
                    w.delete(k.as_bytes())?;
                } else {
                    w.put(k.as_bytes(), &Packed::pack(&rec).to_bytes())?;
                }
                if sweep {
                    sweep_some(w, &prepare, &mut problems)?;
                }
                Ok(())
            })
        })?;
        if now.saturating_sub(self.synced_at.load(Relaxed)) >= SYNC_SECS {
            self.synced_at.store(now, Relaxed);
            self.with(|db| db.sync())?;
        }
        Ok(problems.into_iter().map(|p| format!("{}: {p}", self.path.display())).collect())
    }

    /// Merges records into the database in one transaction (an import).
    pub(super) fn merge_all(&self, records: &[(Key, Record)]) -> DbResult<()> {
        self.with(|db| {
            db.write(|w| {
                for (key, rec) in records {
                    let k = key.text();
                    let mut merged = w.get(k.as_bytes())?.and_then(|v| decode(&v).ok()).unwrap_or_default();
                    merged.merge(rec);
                    if !merged.is_empty() {
                        w.put(k.as_bytes(), &Packed::pack(&merged).to_bytes())?;
                    }
                }
                Ok(())
            })
        })
    }

    /// Every record, in key order, and the keys whose value could not be read.
    pub(super) fn all(&self) -> DbResult<All> {
        self.with(|db| {
            db.read(|r| {
                let mut out = Vec::new();
                let mut bad = Vec::new();
                r.for_each(|k, v| {
                    if k.first() == Some(&0) {
                        return true;
                    }
                    match (parse_key(k), decode(v)) {
                        (Some(key), Ok(rec)) => out.push((key, rec)),
                        _ => bad.push(String::from_utf8_lossy(k).into_owned()),
                    }
                    true
                })
                .map(|()| (out, bad))
            })?
        })
    }
}

fn decode(v: &[u8]) -> std::result::Result<Record, String> {
    Packed::from_bytes(v).map(|p| p.unpack()).ok_or_else(|| format!("a value of {} bytes this version cannot read", v.len()))
}

fn parse_key(k: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(k).ok()?;
    super::record::parse_line(text).ok().map(|(key, _)| key)
}

/// Looks at the next few records after where the last sweep stopped and deletes the
/// expired ones (and values no version of ours wrote).
fn sweep_some(w: &mut crate::ffi::lmdb::Writer<'_>, prepare: &impl Fn(&mut Record), problems: &mut Vec<String>) -> std::result::Result<(), DbError> {
    let mut from = w.get(META_SWEEP)?.unwrap_or_default();
    from.push(0); // strictly after the last key looked at
    let batch = w.range(&from, SWEEP_RECORDS)?;
    let mut last = Vec::new();
    for (k, v) in &batch {
        last.clone_from(k);
        if k.first() == Some(&0) {
            continue;
        }
        match decode(v) {
            Ok(mut r) => {
                prepare(&mut r);
                if r.is_empty() {
                    w.delete(k)?;
                }
            }
            Err(e) => {
                problems.push(format!("record for {}: {e}; deleted by the sweep", String::from_utf8_lossy(k)));
                w.delete(k)?;
            }
        }
    }
    if batch.len() < SWEEP_RECORDS {
        last.clear(); // the end: the next sweep starts again from the first record
    }
    w.put(META_SWEEP, &last)
}

/// What is at `path` before LMDB sees it.
enum Found {
    Nothing,
    TextV1(Vec<u8>),
    Other,
}

fn look(path: &Path) -> std::result::Result<Found, String> {
    use std::io::Read as _;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(format!("{}: cannot open: {e}", path.display())),
    };
    let mut head = [0u8; 17];
    let n = f.read(&mut head).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if n == 0 {
        return Ok(Found::Nothing);
    }
    if head[..n].starts_with(FILE_MAGIC.as_bytes()) {
        let mut all = head[..n].to_vec();
        f.read_to_end(&mut all).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        return Ok(Found::TextV1(all));
    }
    Ok(Found::Other)
}

/// Under the setup lock: the database at `path`, after converting a text file or
/// setting aside what is not ours.
fn setup(path: &Path, now: u64, problems: &mut Vec<String>) -> std::result::Result<Db, String> {
    match look(path)? {
        Found::TextV1(text) => convert(path, &text, problems)?,
        Found::Nothing => {}
        Found::Other => match open_existing(path) {
            Ok(db) => return Ok(db),
            Err(why) => set_aside(path, now, &why, problems)?,
        },
    }
    let db = Db::open(path, MAP_SIZE, MAX_READERS).map_err(|e| describe(path, e))?;
    db.write(|w| w.put(META_MAGIC, DB_MAGIC)).map_err(|e| describe(path, e))?;
    Ok(db)
}

/// An existing file, if it is a whole database of ours: LMDB can open it, it is not
/// shorter than its last transaction needs (a truncated map faults when read), and it
/// holds our magic, or nothing at all. Err(why) otherwise (the handle is closed).
fn open_existing(path: &Path) -> std::result::Result<Db, String> {
    let db = match Db::open(path, MAP_SIZE, MAX_READERS) {
        Ok(db) => db,
        Err(e) if e.not_lmdb() => return Err("not a memory database".into()),
        Err(e) if e.version_mismatch() => return Err("an LMDB database of another LMDB version".into()),
        Err(e) => return Err(e.to_string()),
    };
    // What the last commit needs first, the file's length after: other processes may
    // commit in between, and a file only grows (LMDB writes a commit's pages before its
    // meta page), so read the other way round a live database could look truncated.
    let needed = db.needed_len().map_err(|e| e.to_string())?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len < needed {
        return Err(format!("truncated ({len} bytes of {needed})"));
    }
    let (magic, any) = db
        .read(|r| -> std::result::Result<(Option<Vec<u8>>, bool), DbError> {
            let magic = r.get(META_MAGIC)?.map(<[u8]>::to_vec);
            let mut any = false;
            r.for_each(|_, _| {
                any = true;
                false
            })?;
            Ok((magic, any))
        })
        .and_then(|r| r)
        .map_err(|e| e.to_string())?;
    match magic {
        Some(m) if m == DB_MAGIC => Ok(db),
        Some(m) => Err(format!("a memory database of another version ({:?})", String::from_utf8_lossy(&m))),
        None if any => Err("an LMDB database of another program".into()),
        None => {
            db.write(|w| w.put(META_MAGIC, DB_MAGIC)).map_err(|e| e.to_string())?;
            Ok(db)
        }
    }
}

/// Renames what is at `path` to `path.corrupt-UNIXTIME` so a new database can start.
fn set_aside(path: &Path, now: u64, why: &str, problems: &mut Vec<String>) -> std::result::Result<(), String> {
    let aside = PathBuf::from(format!("{}.corrupt-{now}", path.display()));
    std::fs::rename(path, &aside).map_err(|e| format!("{}: {why}, and cannot be set aside: {e}", path.display()))?;
    problems.push(format!("{}: {why}; set aside as {} and a new memory started", path.display(), aside.display()));
    Ok(())
}

/// Converts a version-1 text file: its records go into a new database written beside
/// it, the text is kept as `path.v1`, and the database takes its name by rename (a
/// process killed half-way leaves the text file as it was, converted at the next open).
fn convert(path: &Path, text: &[u8], problems: &mut Vec<String>) -> std::result::Result<(), String> {
    let (records, bad) = parse_file(text);
    problems.extend(bad.into_iter().map(|p| format!("{}{p}", path.display())));
    let tmp = PathBuf::from(format!("{}.convert-{}", path.display(), std::process::id()));
    let tmp_lock = PathBuf::from(format!("{}-lock", tmp.display()));
    let _ = std::fs::remove_file(&tmp);
    {
        let db = Db::open(&tmp, MAP_SIZE, MAX_READERS).map_err(|e| describe(&tmp, e))?;
        db.write(|w| {
            w.put(META_MAGIC, DB_MAGIC)?;
            for (key, rec) in &records {
                w.put(key.text().as_bytes(), &Packed::pack(rec).to_bytes())?;
            }
            Ok(())
        })
        .map_err(|e| describe(&tmp, e))?;
        db.sync().map_err(|e| describe(&tmp, e))?;
    }
    let _ = std::fs::remove_file(&tmp_lock);
    let v1 = PathBuf::from(format!("{}.v1", path.display()));
    let _ = std::fs::remove_file(&v1);
    std::fs::hard_link(path, &v1).map_err(|e| format!("{}: cannot keep the text file as {}: {e}", path.display(), v1.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: cannot replace the text file: {e}", path.display()))?;
    Ok(())
}

/// The memory is the MTA's own business: mode 0600 for the database and its lock file,
/// whatever an older version or an umask left (LMDB creates them 0600 itself).
fn tighten_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for p in [path.to_path_buf(), PathBuf::from(format!("{}-lock", path.display()))] {
        if let Ok(m) = std::fs::metadata(&p) {
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.permissions().mode() & 0o700));
            }
        }
    }
}
