//! LMDB, the one C library the crate calls itself: the environment, transactions and
//! cursor under the memory database (`recovery::memory::db`), behind a safe interface.
//!
//! Why here: every `unsafe` of the crate lives in `src/ffi`, and this is a foreign
//! function interface like the C program's callbacks, in the other direction. Like the
//! rest of `ffi` it decides nothing: what is stored, when, and what a value means is
//! recovery's. Why not a wrapper crate (heed): a forked child must open its own
//! environment on the same file and never close the one it inherited (see `Drop`),
//! which heed's process-wide registry of open paths does not allow.
//!
//! LMDB's rules this module keeps (lmdb.h, "Caveats"): one environment per file per
//! process at a time; an environment is not used across fork() (the child reopens);
//! read transactions are short; the reader table is cleaned of dead processes at open.

use std::ffi::{c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use lmdb_master_sys as mdb;

/// An LMDB return code with what was being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbError {
    /// The code: an errno, or one of LMDB's (`MDB_INVALID`, `MDB_MAP_FULL`, ...).
    pub code: c_int,
    /// The call that failed.
    pub what: &'static str,
}

impl DbError {
    /// The file is not an LMDB environment (or its meta pages are damaged).
    pub fn not_lmdb(&self) -> bool {
        self.code == mdb::MDB_INVALID
    }

    /// The file was written by an incompatible LMDB version.
    pub fn version_mismatch(&self) -> bool {
        self.code == mdb::MDB_VERSION_MISMATCH
    }

    /// The map is full.
    pub fn full(&self) -> bool {
        self.code == mdb::MDB_MAP_FULL
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: mdb_strerror returns a static NUL-terminated string for any code.
        let text = unsafe { CStr::from_ptr(mdb::mdb_strerror(self.code)) };
        write!(f, "{}: {}", self.what, text.to_string_lossy())
    }
}

fn check(rc: c_int, what: &'static str) -> Result<(), DbError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(DbError { code: rc, what })
    }
}

/// How many times this process is a fork() child of the one that opened an
/// environment: incremented in the child by a pthread_atfork handler.
static FORKS: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Environments inherited across fork() and replaced: kept, never closed.
static INHERITED: parking_lot::Mutex<Vec<usize>> = parking_lot::Mutex::new(Vec::new());

fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// One open environment with its unnamed database.
pub struct Db {
    env: *mut mdb::MDB_env,
    dbi: mdb::MDB_dbi,
    /// `FORKS` when it was opened: another value means a fork() child holds it.
    generation: u64,
}

// SAFETY: an environment opened with MDB_NOTLS may be used from any thread, and every
// transaction here begins and ends inside one call on one thread.
unsafe impl Send for Db {}
// SAFETY: as above; LMDB serialises writers itself (its writer mutex).
unsafe impl Sync for Db {}

fn val(b: &[u8]) -> mdb::MDB_val {
    mdb::MDB_val { mv_size: b.len(), mv_data: b.as_ptr() as *mut c_void }
}

/// # Safety
/// `v` must come from LMDB inside a transaction that is still open, and the slice must
/// not outlive it (nor, in a write transaction, the next change).
unsafe fn bytes<'a>(v: &mdb::MDB_val) -> &'a [u8] {
    if v.mv_size == 0 {
        return &[];
    }
    // SAFETY: LMDB hands out `mv_size` readable bytes at `mv_data` (the caller's contract).
    unsafe { std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size) }
}

impl Db {
    /// Opens (creating if missing, mode 0600) the environment in the single file
    /// `path` (its lock file is `path` + "-lock"): no fsync at commit (a killed
    /// process loses nothing committed; a power failure may lose the last commits
    /// until `sync`), no read-ahead (lookups are random), `max_readers` reader slots.
    pub fn open(path: &Path, map_size: usize, max_readers: u32) -> Result<Db, DbError> {
        ATFORK.call_once(|| {
            // SAFETY: registers a handler that only does an atomic increment.
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        });
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| DbError { code: libc::EINVAL, what: "path" })?;
        let mut env: *mut mdb::MDB_env = std::ptr::null_mut();
        // SAFETY: `env` is a valid out pointer.
        check(unsafe { mdb::mdb_env_create(&mut env) }, "mdb_env_create")?;
        let db = Db { env, dbi: 0, generation: forks() };
        // From here `db`'s Drop closes the handle on every error path.
        // SAFETY: `env` is a created, unopened environment; the path is NUL-terminated.
        unsafe {
            check(mdb::mdb_env_set_mapsize(env, map_size as mdb::mdb_size_t), "mdb_env_set_mapsize")?;
            check(mdb::mdb_env_set_maxreaders(env, max_readers as c_uint), "mdb_env_set_maxreaders")?;
            let flags = mdb::MDB_NOSUBDIR | mdb::MDB_NOTLS | mdb::MDB_NOSYNC | mdb::MDB_NORDAHEAD;
            check(mdb::mdb_env_open(env, cpath.as_ptr(), flags, 0o600), "mdb_env_open")?;
            let mut dead: c_int = 0;
            check(mdb::mdb_reader_check(env, &mut dead), "mdb_reader_check")?;
        }
        let mut db = db;
        db.dbi = db.write(|w| {
            let mut dbi: mdb::MDB_dbi = 0;
            // SAFETY: `w.txn` is an open write transaction; NULL names the unnamed database.
            check(unsafe { mdb::mdb_dbi_open(w.txn, std::ptr::null(), 0, &mut dbi) }, "mdb_dbi_open")?;
            Ok(dbi)
        })?;
        Ok(db)
    }

    /// Whether this handle was inherited across fork(): the child must open its own.
    pub fn inherited(&self) -> bool {
        self.generation != forks()
    }

    /// The bytes the last committed transaction uses: (last page + 1) x page size. A
    /// file shorter than this was truncated, and reading it would fault.
    pub fn needed_len(&self) -> Result<u64, DbError> {
        // SAFETY: zeroed C structs filled by LMDB from an open environment.
        let (info, stat) = unsafe {
            let mut info: mdb::MDB_envinfo = std::mem::zeroed();
            let mut stat: mdb::MDB_stat = std::mem::zeroed();
            check(mdb::mdb_env_info(self.env, &mut info), "mdb_env_info")?;
            check(mdb::mdb_env_stat(self.env, &mut stat), "mdb_env_stat")?;
            (info, stat)
        };
        Ok((info.me_last_pgno as u64 + 1) * stat.ms_psize as u64)
    }

    /// Runs `f` in a read transaction (a snapshot: never blocks, never blocked).
    pub fn read<R>(&self, f: impl FnOnce(&Reader<'_>) -> R) -> Result<R, DbError> {
        let mut txn: *mut mdb::MDB_txn = std::ptr::null_mut();
        // SAFETY: an open environment; a read-only top-level transaction.
        check(unsafe { mdb::mdb_txn_begin(self.env, std::ptr::null_mut(), mdb::MDB_RDONLY, &mut txn) }, "mdb_txn_begin")?;
        let r = Reader { txn, dbi: self.dbi, _db: std::marker::PhantomData };
        let out = f(&r);
        // SAFETY: the transaction is open and nothing borrowed from it survives `f`.
        unsafe { mdb::mdb_txn_abort(txn) };
        Ok(out)
    }

    /// Runs `f` in the write transaction (one at a time across every process): committed
    /// when `f` returns Ok, aborted when it returns Err.
    pub fn write<R>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<R, DbError>) -> Result<R, DbError> {
        let mut txn: *mut mdb::MDB_txn = std::ptr::null_mut();
        // SAFETY: an open environment; a read-write top-level transaction.
        check(unsafe { mdb::mdb_txn_begin(self.env, std::ptr::null_mut(), 0, &mut txn) }, "mdb_txn_begin")?;
        let mut w = Writer { txn, dbi: self.dbi, _db: std::marker::PhantomData };
        match f(&mut w) {
            // SAFETY: the transaction is open; commit frees it whatever it returns.
            Ok(out) => check(unsafe { mdb::mdb_txn_commit(txn) }, "mdb_txn_commit").map(|()| out),
            Err(e) => {
                // SAFETY: the transaction is open.
                unsafe { mdb::mdb_txn_abort(txn) };
                Err(e)
            }
        }
    }

    /// Flushes committed data to disk (fsync).
    pub fn sync(&self) -> Result<(), DbError> {
        // SAFETY: an open environment.
        check(unsafe { mdb::mdb_env_sync(self.env, 1) }, "mdb_env_sync")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.inherited() {
            // A fork() child must not close its parent's environment: mdb_env_close
            // closes the lock file, and closing any descriptor of a file drops every
            // fcntl lock this process holds on it, the ones of the child's own
            // environment included. The child keeps the inherited handle, unused.
            INHERITED.lock().push(self.env as usize);
            return;
        }
        // SAFETY: the environment is open, owned by this handle, and no transaction is
        // open (each lives inside one `read` or `write` call).
        unsafe { mdb::mdb_env_close(self.env) };
    }
}

/// Entries copied out of a transaction: (key, value).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A read transaction.
pub struct Reader<'a> {
    txn: *mut mdb::MDB_txn,
    dbi: mdb::MDB_dbi,
    _db: std::marker::PhantomData<&'a Db>,
}

impl Reader<'_> {
    /// The value of `key`, borrowed from the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, DbError> {
        get(self.txn, self.dbi, key)
    }

    /// Calls `f` on every (key, value) in key order, while it returns true.
    pub fn for_each(&self, f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(), DbError> {
        scan(self.txn, self.dbi, &[], usize::MAX, f)
    }
}

/// The write transaction.
pub struct Writer<'a> {
    txn: *mut mdb::MDB_txn,
    dbi: mdb::MDB_dbi,
    _db: std::marker::PhantomData<&'a Db>,
}

impl Writer<'_> {
    /// The value of `key` (copied: a later change in this transaction may move it).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        get(self.txn, self.dbi, key).map(|v| v.map(<[u8]>::to_vec))
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let (mut k, mut v) = (val(key), val(value));
        // SAFETY: an open write transaction; LMDB copies key and value.
        check(unsafe { mdb::mdb_put(self.txn, self.dbi, &mut k, &mut v, 0) }, "mdb_put")
    }

    /// Deletes `key`; false when it was not there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, DbError> {
        let mut k = val(key);
        // SAFETY: an open write transaction.
        match unsafe { mdb::mdb_del(self.txn, self.dbi, &mut k, std::ptr::null_mut()) } {
            0 => Ok(true),
            mdb::MDB_NOTFOUND => Ok(false),
            rc => Err(DbError { code: rc, what: "mdb_del" }),
        }
    }

    /// Up to `n` entries with keys from `from` on (`&[]`: from the first), copied.
    pub fn range(&self, from: &[u8], n: usize) -> Result<Entries, DbError> {
        let mut out = Vec::new();
        scan(self.txn, self.dbi, from, n, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }
}

fn get<'t>(txn: *mut mdb::MDB_txn, dbi: mdb::MDB_dbi, key: &[u8]) -> Result<Option<&'t [u8]>, DbError> {
    let mut k = val(key);
    let mut v = mdb::MDB_val { mv_size: 0, mv_data: std::ptr::null_mut() };
    // SAFETY: an open transaction (the callers' handles live inside `read`/`write`).
    match unsafe { mdb::mdb_get(txn, dbi, &mut k, &mut v) } {
        // SAFETY: `v` was just filled by LMDB in this transaction; the lifetime is the
        // caller's handle's, which ends before the transaction does.
        0 => Ok(Some(unsafe { bytes(&v) })),
        mdb::MDB_NOTFOUND => Ok(None),
        rc => Err(DbError { code: rc, what: "mdb_get" }),
    }
}

/// Walks entries with keys from `from` on, at most `n` of them, while `f` returns true.
fn scan(
    txn: *mut mdb::MDB_txn,
    dbi: mdb::MDB_dbi,
    from: &[u8],
    n: usize,
    mut f: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), DbError> {
    let mut cur: *mut mdb::MDB_cursor = std::ptr::null_mut();
    // SAFETY: an open transaction.
    check(unsafe { mdb::mdb_cursor_open(txn, dbi, &mut cur) }, "mdb_cursor_open")?;
    let mut k = val(from);
    let mut v = mdb::MDB_val { mv_size: 0, mv_data: std::ptr::null_mut() };
    let mut op = if from.is_empty() { mdb::MDB_FIRST } else { mdb::MDB_SET_RANGE };
    let mut seen = 0;
    let result = loop {
        if seen == n {
            break Ok(());
        }
        // SAFETY: an open cursor; `k` and `v` are valid in/out values.
        match unsafe { mdb::mdb_cursor_get(cur, &mut k, &mut v, op) } {
            0 => {}
            mdb::MDB_NOTFOUND => break Ok(()),
            rc => break Err(DbError { code: rc, what: "mdb_cursor_get" }),
        }
        seen += 1;
        op = mdb::MDB_NEXT;
        // SAFETY: filled by LMDB just now; the slices do not outlive this iteration.
        if !f(unsafe { bytes(&k) }, unsafe { bytes(&v) }) {
            break Ok(());
        }
    };
    // SAFETY: the cursor is open and belongs to this transaction.
    unsafe { mdb::mdb_cursor_close(cur) };
    result
}
