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
