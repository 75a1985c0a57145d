//! The TLS-RPT record line reader (`SessionResult::from_line`: lines read back from
//! files). Properties: no panic; a line that reads writes back, on one line, to a
//! line that reads to the same result; it adds to an aggregate whose report is JSON
//! that counts it once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::tlsrpt::{Aggregate, SessionResult};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(r) = SessionResult::from_line(text) else { return };
    let line = r.to_line();
    assert!(!line.contains(['\n', '\r']), "a record on more than one line: {line:?}");
    assert_eq!(SessionResult::from_line(&line).as_ref(), Ok(&r), "{text:?} -> {line:?}");
    let mut a = Aggregate::new("o", "c");
    a.add(&r).expect("a record that reads adds");
    if r.time < mailtls::tlsrpt::aggregate::MAX_TIME {
        let json = a.to_json(r.time, r.time + 1, "id").expect("a report of one second");
        let v: serde_json::Value = serde_json::from_str(&json).expect("the report is JSON");
        let s = &v["policies"][0]["summary"];
        let n = s["total-successful-session-count"].as_u64().unwrap() + s["total-failure-session-count"].as_u64().unwrap();
        assert_eq!(n, 1, "{json}");
    }
});
