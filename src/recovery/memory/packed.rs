//! The in-process form of a record: 32 bytes, times as u32 seconds (to 2106), flags in
//! one byte, so that a million peers fit in about 160 MB. Only `Memory` sees it.

use super::*;

/// A record as the process map keeps it: 32 bytes instead of about 100 (times as
/// u32 Unix seconds, good to 2106, later ones saturate; which facts are present in a
/// bit set). With 1,000,000 peers that is what keeps an entry under 256 bytes.
#[derive(Clone, Copy, Default)]
pub(super) struct Packed {
    pub(super) tolerant_at: u32,
    pub(super) intolerant_first: u32,
    pub(super) intolerant_last: u32,
    pub(super) intolerant_count: u32,
    pub(super) sni_off: u32,
    pub(super) pinned: u32,
    tls13: u32,
    /// Bits: TOLERANT, INTOLERANT, SNI_OFF, PINNED, TLS13, PQ_KNOWN, PQ.
    pub(super) flags: u8,
    pub(super) tolerant_rung: u8,
    pub(super) intolerant_rung: u8,
    pub(super) intolerant_class: u8,
}

pub(super) const TOLERANT: u8 = 1;
pub(super) const INTOLERANT: u8 = 2;
pub(super) const SNI_OFF: u8 = 4;
pub(super) const PINNED: u8 = 8;
pub(super) const TLS13: u8 = 16;
pub(super) const PQ_KNOWN: u8 = 32;
pub(super) const PQ: u8 = 64;

pub(super) fn secs32(t: u64) -> u32 {
    t.min(u32::MAX as u64) as u32
}

impl Packed {
    pub(super) fn pack(r: &Record) -> Packed {
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

    pub(super) fn unpack(&self) -> Record {
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

/// The first byte of a record's value in the memory database: the layout's version.
pub(super) const VALUE_V1: u8 = 1;
/// A value's length: the version byte, seven u32 and four u8.
pub(super) const VALUE_LEN: usize = 1 + 7 * 4 + 4;

impl Packed {
    /// The database value: `VALUE_V1`, then the fields, little-endian.
    pub(super) fn to_bytes(self) -> [u8; VALUE_LEN] {
        let mut out = [0u8; VALUE_LEN];
        out[0] = VALUE_V1;
        let words = [
            self.tolerant_at,
            self.intolerant_first,
            self.intolerant_last,
            self.intolerant_count,
            self.sni_off,
            self.pinned,
            self.tls13,
        ];
        for (i, w) in words.iter().enumerate() {
            out[1 + 4 * i..5 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        out[29..].copy_from_slice(&[self.flags, self.tolerant_rung, self.intolerant_rung, self.intolerant_class]);
        out
    }

    /// A database value read back; None when it is not one this version wrote (wrong
    /// length or version, a rung or class out of range, unknown flag bits): a value
    /// is input like any other, and `unpack` must never index out of bounds.
    pub(super) fn from_bytes(b: &[u8]) -> Option<Packed> {
        if b.len() != VALUE_LEN || b[0] != VALUE_V1 {
            return None;
        }
        let w = |i: usize| u32::from_le_bytes([b[1 + 4 * i], b[2 + 4 * i], b[3 + 4 * i], b[4 + 4 * i]]);
        let [flags, tolerant_rung, intolerant_rung, intolerant_class] = [b[29], b[30], b[31], b[32]];
        let known = TOLERANT | INTOLERANT | SNI_OFF | PINNED | TLS13 | PQ_KNOWN | PQ;
        if flags & !known != 0
            || tolerant_rung as usize >= Rung::ALL.len()
            || intolerant_rung as usize >= Rung::ALL.len()
            || intolerant_class as usize >= FailureClass::ALL.len()
        {
            return None;
        }
        Some(Packed {
            tolerant_at: w(0),
            intolerant_first: w(1),
            intolerant_last: w(2),
            intolerant_count: w(3),
            sni_off: w(4),
            pinned: w(5),
            tls13: w(6),
            flags,
            tolerant_rung,
            intolerant_rung,
            intolerant_class,
        })
    }
}
