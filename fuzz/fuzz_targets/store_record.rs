//! The store record parser (`Record::parse_fields`, the text an application's store
//! holds for a peer), then a memory backed by a store that returns the fuzz text.
//! Properties: a record that parses writes back to text that parses to the same
//! record, on one line; the memory treats an unreadable record as empty (reported),
//! and what it puts back into the store always parses.
#![no_main]
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use mailtls::protocol::Proto;
use mailtls::recovery::memory::{Key, Memory, Record, Store};
use mailtls::recovery::{FailureClass, Rung};

struct OneRecord(Mutex<Option<String>>);

impl Store for OneRecord {
    fn get(&self, _key: &str) -> Result<Option<String>, String> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn put(&self, _key: &str, value: &str) -> Result<(), String> {
        let back = Record::parse_fields(value).expect("the memory stored a record it cannot read");
        assert_eq!(back.fields(), value);
        *self.0.lock().unwrap() = Some(value.to_string());
        Ok(())
    }
    fn delete(&self, _key: &str) -> Result<(), String> {
        *self.0.lock().unwrap() = None;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Record::parse_fields(&text) {
        Ok(r) => {
            let f = r.fields();
            assert!(!f.contains(['\n', '\r']), "fields on more than one line: {f:?}");
            assert_eq!(Record::parse_fields(&f).as_ref(), Ok(&r), "{text:?} -> {f:?}");
        }
        Err(e) => assert!(!e.is_empty()),
    }
    let m = Memory::store(Box::new(OneRecord(Mutex::new(Some(text.to_string())))));
    m.set_clock(1_700_000_000);
    let key = Key::new(Proto::Smtp, "mx.example", 25);
    let _ = m.plan(&key);
    let _ = m.fallback_allowed(&key, Rung::Classic);
    m.record_intolerance(&key, Rung::Modern, FailureClass::Intolerance);
    m.record_success(&key, Rung::Compact, true, true, false);
    assert_eq!(m.get(&key).tolerant.map(|t| t.0), Some(Rung::Compact));
});
