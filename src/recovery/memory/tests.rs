//! The memory's tests: records, files, stores, expiry, and sharing between processes.

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

/// A path in a directory of its own (the database has a lock file beside it; a set-aside
/// or converted file leaves another).
fn tmpfile(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailtls-mem-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("memory")
}

fn cleanup(p: &Path) {
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

/// The names in the database's directory, sorted.
fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
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
    let text = c.export_text().unwrap();
    assert!(text.starts_with(&format!("{FILE_MAGIC}\n")), "{text}");
    assert_eq!(text.lines().count(), 41);
    c.forget(&Key::new(Proto::Smtp, "a.example", 3));
    drop((a, b, c));
    // A memory opened after every handle closed reads the same database.
    let d = Memory::file(&p).unwrap();
    assert_eq!(d.list().unwrap().len(), 39);
    assert!(d.problems().is_empty(), "{:?}", d.problems());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    cleanup(&p);
}

#[test]
fn a_version_1_text_file_is_converted_and_kept_beside() {
    let p = tmpfile("v1");
    std::fs::write(&p, format!("{FILE_MAGIC}\nsmtp ok.example 25 pinned@5\nsmtp bad\nsmtp cut.example 25 pinn")).unwrap();
    let m = Memory::file(&p).unwrap();
    m.set_clock(10);
    assert_eq!(m.list().unwrap().len(), 1);
    assert_eq!(m.problems().len(), 2, "{:?}", m.problems());
    assert_eq!(std::fs::read_to_string(p.with_extension("v1")).unwrap().lines().count(), 4);
    m.record_sni_off(&key());
    drop(m);
    let again = Memory::file(&p).unwrap();
    again.set_clock(10);
    assert!(again.problems().is_empty(), "{:?}", again.problems());
    assert_eq!(again.list().unwrap().len(), 2);
    assert_eq!(dir_names(&p), ["memory", "memory-lock", "memory.lock", "memory.v1"]);
    cleanup(&p);
}

#[test]
fn foreign_truncated_or_other_programs_files_are_set_aside() {
    let p = tmpfile("bad");
    // Not LMDB at all.
    std::fs::write(&p, b"\x00\x01garbage that is not a database").unwrap();
    let m = Memory::file(&p).unwrap();
    assert!(m.list().unwrap().is_empty());
    assert_eq!(m.problems().len(), 1, "{:?}", m.problems());
    assert!(m.problems()[0].contains("not a memory database; set aside as"), "{:?}", m.problems());
    for i in 0..2000u16 {
        m.record_success(&Key::new(Proto::Smtp, "many.example", i), Rung::Modern, true, true, true);
    }
    drop(m);
    // Truncated: shorter than its last transaction needs (reading it would fault).
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let m = Memory::file(&p).unwrap();
    assert!(m.problems().iter().any(|e| e.contains("truncated")), "{:?}", m.problems());
    assert!(m.list().unwrap().is_empty());
    drop(m);
    // Another program's LMDB database: no magic, other keys.
    std::fs::remove_file(&p).unwrap();
    {
        let other = crate::ffi::lmdb::Db::open(&p, 1 << 20, 16).unwrap();
        other.write(|w| w.put(b"someone else's key", b"value")).unwrap();
    }
    let m = Memory::file(&p).unwrap();
    assert!(m.problems().iter().any(|e| e.contains("another program")), "{:?}", m.problems());
    m.record_sni_off(&key());
    assert_eq!(m.list().unwrap().len(), 1);
    assert_eq!(dir_names(&p).iter().filter(|n| n.starts_with("memory.corrupt-")).count(), 1, "{:?}", dir_names(&p));
    cleanup(&p);
}

#[test]
fn a_value_this_version_cannot_read_is_reported_and_replaced() {
    let p = tmpfile("value");
    {
        let m = Memory::file(&p).unwrap();
        m.record_sni_off(&key());
    }
    {
        let db = crate::ffi::lmdb::Db::open(&p, super::db::MAP_SIZE, 16).unwrap();
        db.write(|w| w.put(key().text().as_bytes(), b"\x07 from the future")).unwrap();
    }
    let m = Memory::file(&p).unwrap();
    assert!(m.get(&key()).is_empty());
    assert!(m.problems().iter().any(|e| e.contains("cannot read")), "{:?}", m.problems());
    m.record_sni_off(&key());
    assert!(m.get(&key()).sni_off.is_some());
    cleanup(&p);
}

#[test]
fn expired_records_are_swept_as_changes_go_by() {
    let p = tmpfile("sweep");
    let m = Memory::file(&p).unwrap();
    m.set_clock(1000);
    for i in 0..40u16 {
        m.record_sni_off(&Key::new(Proto::Smtp, "old.example", i));
    }
    // Long after every one of them expired, changes to one other peer sweep them.
    m.set_clock(1000 + 400 * 86400);
    for _ in 0..(16 * 8) {
        m.record_sni_off(&key());
    }
    let (all, bad) = match &m.backend {
        Backend::Db(d) => d.all().unwrap(),
        _ => unreachable!(),
    };
    assert!(bad.is_empty());
    assert_eq!(all.len(), 1, "{all:?}");
    cleanup(&p);
}

#[test]
fn export_and_import_carry_every_record() {
    let p = tmpfile("export");
    let a = Memory::file(&p).unwrap();
    a.set_clock(100);
    a.record_success(&key(), Rung::Compact, true, false, false);
    a.record_intolerance(&Key::new(Proto::Imap, "imap.example", 143), Rung::Modern, FailureClass::Intolerance);
    let text = a.export_text().unwrap();
    let b = Memory::in_process();
    b.set_clock(100);
    assert_eq!(b.import_text(text.as_bytes()), 2);
    assert_eq!(b.export_text().unwrap(), text);
    assert_eq!(a.import_text(format!("{FILE_MAGIC}\nnonsense\n").as_bytes()), 0);
    assert!(a.problems().iter().any(|e| e.starts_with("import:2:")), "{:?}", a.problems());
    cleanup(&p);
}

#[test]
fn the_text_backend_still_shares_its_file() {
    let p = tmpfile("text");
    let a = Memory::text_file(&p).unwrap();
    a.record_success(&key(), Rung::Modern, true, true, true);
    let b = Memory::text_file(&p).unwrap();
    assert!(b.get(&key()).pinned.is_some());
    assert!(std::fs::read_to_string(&p).unwrap().starts_with(FILE_MAGIC));
    cleanup(&p);
}

#[test]
fn a_store_gets_every_change() {
    struct S(Mutex<HashMap<String, String>>);
    impl Store for S {
        fn get(&self, k: &str) -> std::result::Result<Option<String>, String> {
            Ok(self.0.lock().get(k).cloned())
        }
        fn put(&self, k: &str, v: &str) -> std::result::Result<(), String> {
            self.0.lock().insert(k.into(), v.into());
            Ok(())
        }
        fn delete(&self, k: &str) -> std::result::Result<(), String> {
            self.0.lock().remove(k);
            Ok(())
        }
    }
    let m = Memory::store(Box::new(S(Mutex::new(HashMap::new()))));
    m.record_success(&key(), Rung::Classic, true, false, false);
    assert_eq!(m.get(&key()).tolerant.map(|t| t.0), Some(Rung::Classic));
    m.forget(&key());
    assert!(m.get(&key()).is_empty());
}
