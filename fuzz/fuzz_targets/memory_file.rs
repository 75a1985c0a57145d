//! The version-1 memory file parser (`parse_file`: what the database converts at its
//! first open, what import reads, what the text backend reads), then the same bytes
//! read by `Memory::text_file` from a file. The database file itself is not fuzzed:
//! LMDB trusts its file (it is the MTA's own, mode 0600), and what we check before
//! LMDB maps one (truncation, foreign content) has its own tests.
//! Properties: every record read writes back as a line that reads to the same key and
//! record; a file written from what was read reads back the same with no problem; the
//! memory loaded from the file holds only keys the parser found and reports the same
//! problems.
#![no_main]
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use mailtls::recovery::memory::{parse_file, parse_line, Memory, FILE_MAGIC};

fuzz_target!(|data: &[u8]| {
    let (records, problems) = parse_file(data);
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(problems.len() <= lines, "{} problems in {lines} lines", problems.len());
    let mut text = format!("{FILE_MAGIC}\n");
    for (k, r) in &records {
        let line = format!("{} {}", k.text(), r.fields());
        assert!(!line.contains('\n'), "a record on two lines: {line:?}");
        assert_eq!(parse_line(&line).as_ref(), Ok(&(k.clone(), r.clone())), "{line:?}");
        text.push_str(&line);
        text.push('\n');
    }
    let (again, problems_again) = parse_file(text.as_bytes());
    assert!(problems_again.is_empty(), "{problems_again:?} in {text:?}");
    assert_eq!(again, records);

    // The same bytes through the text backend (read only: no write, no fsync).
    let path = std::env::temp_dir().join(format!("mailtls-fuzz-memory-{}", std::process::id()));
    std::fs::write(&path, data).expect("a temporary file");
    let m = Memory::text_file(&path).expect("a file memory");
    m.set_clock(1);
    let keys: HashSet<_> = records.iter().map(|(k, _)| k.clone()).collect();
    for (k, _) in m.list().expect("a file memory lists") {
        assert!(keys.contains(&k), "{k:?} was not in the file");
    }
    assert_eq!(m.problems().len(), problems.len().min(100));
    let _ = std::fs::remove_file(&path);
});
