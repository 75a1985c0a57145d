//! The intolerance memory as a shared, reference-counted handle.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::{c_str, cstring, ffi_guard, mailtls_result, non_null};
use crate::protocol::Proto;
use crate::recovery::memory::{Key, Lifetimes, Memory, Store};

/// The intolerance memory (opaque, shared, reference counted): what each peer
/// tolerated and failed on, and whether it ever did TLS.
pub struct mailtls_memory {
    _private: [u8; 0],
}

/// Store callback: copy the record text for `key` (NUL-terminated) into `buf` of `len`
/// bytes and return 0 (an empty string also means none), or return `ENOENT` when there
/// is none. `ERANGE`: the value does not fit; the library calls again with a buffer
/// four times larger (4096 bytes first, at most 65536). Any other errno is a failure
/// of the store: it is reported (`mailtls_memory_problems`), the lookup finds nothing,
/// and a change to that peer is not written, so that a record the store could not read
/// is never overwritten. Keys are `PROTO HOST PORT` (`smtp mx.example.org 25`):
/// printable ASCII, the host lower-cased, at most 270 bytes.
pub type mailtls_store_get_callback =
    Option<extern "C" fn(userdata: *mut c_void, key: *const c_char, buf: *mut c_char, len: usize) -> i32>;
/// Store callback: keep `value` (the record's text fields, one line, at most a few
/// hundred bytes) for `key`; return 0, or an errno (reported).
pub type mailtls_store_put_callback =
    Option<extern "C" fn(userdata: *mut c_void, key: *const c_char, value: *const c_char) -> i32>;
/// Store callback: delete `key`; return 0 (also when it was not there, or ENOENT), or an
/// errno (reported).
pub type mailtls_store_delete_callback = Option<extern "C" fn(userdata: *mut c_void, key: *const c_char) -> i32>;
/// List callback: one record line (`smtp mx.example.org 25 tolerant=compact@1700000000 ...`).
pub type mailtls_memory_list_callback = Option<extern "C" fn(userdata: *mut c_void, line: *const c_char)>;

pub(crate) fn memory_arc(p: *const mailtls_memory) -> Arc<Memory> {
    let raw = p as *const Memory;
    // SAFETY: non-NULL memory pointers come from `Arc::into_raw` in a constructor and
    // the caller still holds its reference; we add one for the new owner.
    unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    }
}

fn mem<'a>(p: *const mailtls_memory) -> &'a Memory {
    // SAFETY: as in `memory_arc`.
    unsafe { &*(p as *const Memory) }
}

fn give(m: Memory, out: *mut *const mailtls_memory) -> mailtls_result {
    // SAFETY: `out` is non-NULL (checked by the caller) and writable.
    unsafe { *out = Arc::into_raw(Arc::new(m)) as *const mailtls_memory };
    mailtls_result::Ok
}

/// Creates a memory that lives as long as the process (and its last reference).
/// Free with `mailtls_memory_free`.
#[no_mangle]
pub extern "C" fn mailtls_memory_new(out: *mut *const mailtls_memory) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(out, mailtls_result::NullParameter);
        give(Memory::in_process(), out)
    })
}

/// Creates a memory persisted in the database file `path` (LMDB), which every process
/// that opens the same file shares: lookups never wait for a writer, a change writes
/// one record in one transaction, a process killed at any point loses nothing it had
/// committed (a power failure may lose the last 30 seconds or so: commits are not
/// fsynced one by one). The file (and `path` + `-lock` beside it, and the setup lock
/// `path` with the extension `.lock`) is created mode 0600 if missing.
/// What is found there is never fatal: a version-1 text file (`mailtls-memory 1`,
/// what earlier versions wrote) is converted and kept as `path.v1`; a file that is
/// not a memory database, is truncated, or belongs to another program is renamed to
/// `path.corrupt-UNIXTIME` and a new memory starts. Both are reported by
/// `mailtls_memory_problems`. Fails (`MAILTLS_RESULT_IO`, with no memory) only when no
/// database can be opened at `path` at all, for example in a directory that does not
/// exist. Replace the file only by rename, never by writing it in place: processes
/// that have it open read it through a memory map.
#[no_mangle]
pub extern "C" fn mailtls_memory_open_file(path: *const c_char, out: *mut *const mailtls_memory) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(out, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let path = match unsafe { c_str(path) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        match Memory::file(std::path::Path::new(path)) {
            Ok(m) => give(m, out),
            Err(e) => e.code,
        }
    })
}

struct CStore {
    get: extern "C" fn(*mut c_void, *const c_char, *mut c_char, usize) -> i32,
    put: extern "C" fn(*mut c_void, *const c_char, *const c_char) -> i32,
    delete: extern "C" fn(*mut c_void, *const c_char) -> i32,
    userdata: usize,
}

/// The get callback's first buffer, and the largest it is offered after ERANGE.
const STORE_BUF: usize = 4096;
const STORE_BUF_MAX: usize = 65536;

fn errno_text(rc: i32) -> String {
    format!("{} (errno {rc})", std::io::Error::from_raw_os_error(rc))
}

impl Store for CStore {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        let k = cstring(key);
        let mut len = STORE_BUF;
        loop {
            let mut buf = vec![0u8; len];
            let rc = (self.get)(self.userdata as *mut c_void, k.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len());
            match rc {
                0 => {}
                libc::ENOENT => return Ok(None),
                libc::ERANGE if len < STORE_BUF_MAX => {
                    len *= 4;
                    continue;
                }
                libc::ERANGE => return Err(format!("the value does not fit in {STORE_BUF_MAX} bytes")),
                rc => return Err(errno_text(rc)),
            }
            let Some(end) = buf.iter().position(|&b| b == 0) else {
                return Err(format!("the value is not NUL-terminated within {len} bytes"));
            };
            // A value that is not UTF-8 is a record that does not parse: reported, replaced.
            return Ok((end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
    }
    fn put(&self, key: &str, value: &str) -> Result<(), String> {
        let (k, v) = (cstring(key), cstring(value));
        match (self.put)(self.userdata as *mut c_void, k.as_ptr(), v.as_ptr()) {
            0 => Ok(()),
            rc => Err(errno_text(rc)),
        }
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        let k = cstring(key);
        match (self.delete)(self.userdata as *mut c_void, k.as_ptr()) {
            0 | libc::ENOENT => Ok(()),
            rc => Err(errno_text(rc)),
        }
    }
}

/// Creates a memory kept in the application's own store through three callbacks
/// (keys look like `smtp mx.example.org 25`, values are the record's text fields).
/// `userdata` is passed on every call and must outlive the memory. The callbacks are
/// called from whichever thread uses the memory, one call at a time: a slow store
/// delays every session of the memory, so give it a short timeout of its own. A change
/// is a get then a put or delete, not atomic across processes (the last writer wins);
/// stores that several hosts share should expire keys themselves (the longest default
/// lifetime is 60 days) since the library cannot list them.
#[no_mangle]
pub extern "C" fn mailtls_memory_new_store(
    get: mailtls_store_get_callback,
    put: mailtls_store_put_callback,
    delete: mailtls_store_delete_callback,
    userdata: *mut c_void,
    out: *mut *const mailtls_memory,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(out, mailtls_result::NullParameter);
        let (Some(get), Some(put), Some(delete)) = (get, put, delete) else {
            return mailtls_result::NullParameter;
        };
        give(Memory::store(Box::new(CStore { get, put, delete, userdata: userdata as usize })), out)
    })
}

/// Drops the caller's reference; the memory goes when no config uses it. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mailtls_memory_free(m: *const mailtls_memory) {
    ffi_guard!((), {
        if !m.is_null() {
            // SAFETY: from `Arc::into_raw`; releases the caller's reference.
            drop(unsafe { Arc::from_raw(m as *const Memory) });
        }
    })
}

/// Fixes the memory's clock at `unix_seconds` (for tests of expiry and re-probe);
/// 0 returns to the system clock.
#[no_mangle]
pub extern "C" fn mailtls_memory_set_clock(m: *const mailtls_memory, unix_seconds: u64) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        mem(m).set_clock(unix_seconds);
        mailtls_result::Ok
    })
}

/// Sets the lifetimes in seconds: intolerance (default 604800, 7 days), the re-probe
/// interval of the top rung for an intolerant peer (86400), tolerance and pins
/// (5184000, 60 days). A 0 keeps that value.
#[no_mangle]
pub extern "C" fn mailtls_memory_set_lifetimes(
    m: *const mailtls_memory,
    intolerance_s: u64,
    reprobe_s: u64,
    tolerance_s: u64,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        let d = Lifetimes::default();
        let pick = |v: u64, d: u64| if v == 0 { d } else { v };
        mem(m).set_lifetimes(Lifetimes {
            intolerance: pick(intolerance_s, d.intolerance),
            reprobe: pick(reprobe_s, d.reprobe),
            tolerance: pick(tolerance_s, d.tolerance),
        });
        mailtls_result::Ok
    })
}

fn key_of(proto: u32, host: *const c_char, port: u16) -> Result<Key, mailtls_result> {
    let proto = Proto::from_u32(proto).ok_or(mailtls_result::InvalidParameter)?;
    // SAFETY: NUL-terminated string or NULL (checked).
    let host = unsafe { c_str(host) }?;
    Ok(Key::new(proto, host, port))
}

fn copy_out(text: &str, buf: *mut c_char, len: usize, written: *mut usize) -> mailtls_result {
    if buf.is_null() {
        return mailtls_result::NullParameter;
    }
    if text.len() + 1 > len {
        return mailtls_result::BufferTooSmall;
    }
    // SAFETY: `buf` has `len` writable bytes, and we write text.len() + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, text.len());
        *buf.add(text.len()) = 0;
        if !written.is_null() {
            *written = text.len();
        }
    }
    mailtls_result::Ok
}

/// Copies the record of (proto, host, port) as text fields into `buf` (NUL-terminated;
/// "" when nothing is known): `tolerant=RUNG@TIME`, `intolerant=RUNG@LAST,CLASS,COUNT,FIRST`,
/// `sni-off@TIME`, `pinned@TIME`, `pq=yes|no`, `tls13@TIME`; expired facts are left out.
#[no_mangle]
pub extern "C" fn mailtls_memory_lookup(
    m: *const mailtls_memory,
    proto: u32,
    host: *const c_char,
    port: u16,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        let key = match key_of(proto, host, port) {
            Ok(k) => k,
            Err(e) => return e,
        };
        copy_out(&mem(m).get(&key).fields(), buf, len, written)
    })
}

/// Forgets everything about (proto, host, port), in the file or store too.
#[no_mangle]
pub extern "C" fn mailtls_memory_forget(m: *const mailtls_memory, proto: u32, host: *const c_char, port: u16) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        match key_of(proto, host, port) {
            Ok(k) => {
                mem(m).forget(&k);
                mailtls_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// Calls `cb` once per known peer with its record line, sorted by key, and stores the
/// count in `*count` (when not NULL). A memory on an application store cannot be
/// listed: `MAILTLS_RESULT_UNSUPPORTED`.
#[no_mangle]
pub extern "C" fn mailtls_memory_list(
    m: *const mailtls_memory,
    cb: mailtls_memory_list_callback,
    userdata: *mut c_void,
    count: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        let Some(list) = mem(m).list() else { return mailtls_result::Unsupported };
        for (k, r) in &list {
            if let Some(cb) = cb {
                let line = cstring(&format!("{} {}", k.text(), r.fields()));
                cb(userdata, line.as_ptr());
            }
        }
        if !count.is_null() {
            // SAFETY: non-NULL, writable.
            unsafe { *count = list.len() };
        }
        mailtls_result::Ok
    })
}

/// Copies the problems met reading the file or store (corrupt or foreign file,
/// truncated or bad lines, write failures), one per line, into `buf`; "" when none.
#[no_mangle]
pub extern "C" fn mailtls_memory_problems(
    m: *const mailtls_memory,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        copy_out(&mem(m).problems().join("\n"), buf, len, written)
    })
}

/// Writes every record, in the version-1 text format (`mailtls-memory 1`, one line a
/// peer, what `mailtls_memory_import` reads), to the file `path`: created mode 0600 and
/// written whole beside it before a rename, so a reader never sees half an export.
/// Stores `*count` (when not NULL). A memory on an application store cannot be listed:
/// `MAILTLS_RESULT_UNSUPPORTED`; a file that cannot be written: `MAILTLS_RESULT_IO`.
#[no_mangle]
pub extern "C" fn mailtls_memory_export(m: *const mailtls_memory, path: *const c_char, count: *mut usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let path = match unsafe { c_str(path) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        match mem(m).export_file(std::path::Path::new(path)) {
            Ok(n) => {
                if !count.is_null() {
                    // SAFETY: non-NULL, writable.
                    unsafe { *count = n };
                }
                mailtls_result::Ok
            }
            Err(e) => e.code,
        }
    })
}

/// Merges the records of the version-1 text file `path` (an export, or an old memory
/// file) into the memory: for each peer the newer fact wins. Lines that do not parse
/// are skipped and reported by `mailtls_memory_problems`. Stores in `*count` (when not
/// NULL) how many records were read. A file that cannot be read: `MAILTLS_RESULT_IO`.
#[no_mangle]
pub extern "C" fn mailtls_memory_import(m: *const mailtls_memory, path: *const c_char, count: *mut usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(m, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let path = match unsafe { c_str(path) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        match mem(m).import_file(std::path::Path::new(path)) {
            Ok(n) => {
                if !count.is_null() {
                    // SAFETY: non-NULL, writable.
                    unsafe { *count = n };
                }
                mailtls_result::Ok
            }
            Err(e) => e.code,
        }
    })
}
