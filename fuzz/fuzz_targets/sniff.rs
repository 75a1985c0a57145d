//! The server's hello sniffer on arbitrary first flights. Properties: fed one byte at a
//! time it classifies exactly as it does the whole input; `NeedMore(n)` always asks
//! for more than it has and never for more than one maximal record beyond it (a hello
//! may span several records, read one at a time); jumping straight to
//! what it asks for gives the same answer; a classification never changes with more
//! bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::tls::sniff::{refusal_bytes, sniff, Sniff};

/// One maximal TLS record with its header.
const MAX_NEED: usize = 5 + (1 << 14) + 2048;

fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    // One byte at a time.
    let mut have = 0;
    let bytewise = loop {
        match sniff(&data[..have]) {
            Sniff::Done(h) => break Some((h, have)),
            Sniff::NeedMore(n) => {
                assert!(n > have, "NeedMore({n}) with {have} bytes");
                assert!(n - have <= MAX_NEED, "NeedMore({n}) with {have} bytes is more than a record ahead");
                if have == data.len() {
                    break None;
                }
                have += 1;
            }
        }
    };
    // Straight to what it asks for.
    let mut have = 0;
    let jumping = loop {
        match sniff(&data[..have]) {
            Sniff::Done(h) => break Some(h),
            Sniff::NeedMore(n) if n <= data.len() => have = n,
            Sniff::NeedMore(_) => break None,
        }
    };
    match whole {
        Sniff::Done(h) => {
            let (hb, used) = bytewise.expect("whole input classified, one byte at a time not");
            assert_eq!(h, hb, "whole and one byte at a time differ");
            assert_eq!(Some(h), jumping, "whole and asked-for lengths differ");
            assert_eq!(sniff(&data[..used]), Sniff::Done(h), "the classification changed with more bytes");
            let _ = refusal_bytes(&h);
        }
        Sniff::NeedMore(n) => {
            assert!(n > data.len(), "NeedMore({n}) with {} bytes", data.len());
            assert!(bytewise.is_none() && jumping.is_none(), "a prefix was classified, the whole not");
        }
    }
});
