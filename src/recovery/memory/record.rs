//! One peer's record and its text form: the key (protocol, host, port), what it
//! tolerated and failed on, the pin, and the line a memory file or an application's
//! store keeps it in, with the parsers that read them back (what a file or a store
//! holds is input like any peer's: a line that does not parse is reported, never fatal).

use super::*;

/// First line of a memory file.
pub const FILE_MAGIC: &str = "mailtls-memory 1";

/// A peer: (protocol, host, port). The host is compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The protocol.
    pub proto: Proto,
    /// The host, lower-cased.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Key {
    /// A key; the host is lower-cased.
    pub fn new(proto: Proto, host: &str, port: u16) -> Self {
        Key { proto, host: host.to_ascii_lowercase(), port }
    }

    /// The text form used in files and stores: `smtp mx.example.org 25`.
    pub fn text(&self) -> String {
        format!("{} {} {}", self.proto.name(), self.host, self.port)
    }
}

/// The intolerance part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intolerance {
    /// The most conservative rung that failed.
    pub rung: Rung,
    /// Why.
    pub class: FailureClass,
    /// How often.
    pub count: u32,
    /// First seen (Unix seconds).
    pub first: u64,
    /// Last seen (Unix seconds).
    pub last: u64,
}

/// What is known of one peer. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The most modern rung that worked, and when it last did.
    pub tolerant: Option<(Rung, u64)>,
    /// The rung that failed, why, how often and when.
    pub intolerant: Option<Intolerance>,
    /// SNI must be left out (after `unrecognized_name`), since when.
    pub sni_off: Option<u64>,
    /// TLS was negotiated with this peer, last time: a peer that stops offering
    /// STARTTLS is a stripping suspect.
    pub pinned: Option<u64>,
    /// Whether the last TLS session used a post-quantum group.
    pub pq: Option<bool>,
    /// The peer proved it speaks TLS 1.3 (negotiated, or the downgrade sentinel), when.
    pub tls13: Option<u64>,
}

impl Record {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        *self == Record::default()
    }

    /// The record as `key=value` fields separated by spaces (the file format).
    pub fn fields(&self) -> String {
        let mut s = String::new();
        if let Some((r, t)) = self.tolerant {
            let _ = write!(s, " tolerant={}@{t}", r.name());
        }
        if let Some(i) = self.intolerant {
            let _ = write!(s, " intolerant={}@{},{},{},{}", i.rung.name(), i.last, i.class.name(), i.count, i.first);
        }
        if let Some(t) = self.sni_off {
            let _ = write!(s, " sni-off@{t}");
        }
        if let Some(t) = self.pinned {
            let _ = write!(s, " pinned@{t}");
        }
        if let Some(pq) = self.pq {
            let _ = write!(s, " pq={}", if pq { "yes" } else { "no" });
        }
        if let Some(t) = self.tls13 {
            let _ = write!(s, " tls13@{t}");
        }
        s.trim_start().to_string()
    }

    /// Parses the fields written by [`Record::fields`].
    pub fn parse_fields(text: &str) -> std::result::Result<Record, String> {
        let mut r = Record::default();
        for field in text.split_ascii_whitespace() {
            let (name, value) = field.split_once(['=', '@']).ok_or_else(|| format!("bad field {field:?}"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("bad number in {field:?}"));
            match name {
                "tolerant" => {
                    let (rung, t) = value.split_once('@').ok_or_else(|| format!("bad field {field:?}"))?;
                    r.tolerant = Some((rung_by_name(rung)?, num(t)?));
                }
                "intolerant" => {
                    let (rung, rest) = value.split_once('@').ok_or_else(|| format!("bad field {field:?}"))?;
                    let parts: Vec<&str> = rest.split(',').collect();
                    if parts.len() != 4 {
                        return Err(format!("bad field {field:?}"));
                    }
                    r.intolerant = Some(Intolerance {
                        rung: rung_by_name(rung)?,
                        last: num(parts[0])?,
                        class: class_by_name(parts[1])?,
                        count: parts[2].parse().map_err(|_| format!("bad count in {field:?}"))?,
                        first: num(parts[3])?,
                    });
                }
                "sni-off" => r.sni_off = Some(num(value)?),
                "pinned" => r.pinned = Some(num(value)?),
                "tls13" => r.tls13 = Some(num(value)?),
                "pq" => {
                    r.pq = Some(match value {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(format!("bad field {field:?}")),
                    })
                }
                _ => return Err(format!("unknown field {field:?}")),
            }
        }
        Ok(r)
    }

    /// Field-wise union with another view of the same peer: the newer fact wins.
    pub fn merge(&mut self, other: &Record) {
        fn newer<T: Copy>(a: Option<(T, u64)>, b: Option<(T, u64)>) -> Option<(T, u64)> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y.1 > x.1 { y } else { x }),
                (x, None) => x,
                (None, y) => y,
            }
        }
        self.tolerant = newer(self.tolerant, other.tolerant);
        self.intolerant = match (self.intolerant, other.intolerant) {
            (Some(a), Some(b)) => Some(if b.last > a.last { b } else { a }),
            (a, None) => a,
            (None, b) => b,
        };
        self.sni_off = self.sni_off.max(other.sni_off);
        self.pinned = self.pinned.max(other.pinned);
        self.tls13 = self.tls13.max(other.tls13);
        if other.pq.is_some() && (self.pq.is_none() || other.pinned > self.pinned) {
            self.pq = other.pq;
        }
    }
}

pub(super) fn rung_by_name(n: &str) -> std::result::Result<Rung, String> {
    Rung::ALL.iter().copied().find(|r| r.name() == n).ok_or_else(|| format!("unknown rung {n:?}"))
}

pub(super) fn class_by_name(n: &str) -> std::result::Result<FailureClass, String> {
    FailureClass::ALL.iter().copied().find(|c| c.name() == n).ok_or_else(|| format!("unknown class {n:?}"))
}

pub(super) fn proto_by_name(n: &str) -> Option<Proto> {
    (0..6).filter_map(Proto::from_u32).find(|p| p.name() == n)
}

/// Parses one line of a memory file: `smtp mx.example.org 25 tolerant=modern@1700000000 ...`.
pub fn parse_line(line: &str) -> std::result::Result<(Key, Record), String> {
    let mut it = line.splitn(4, ' ');
    let proto = it.next().and_then(proto_by_name).ok_or("unknown protocol")?;
    let host = it.next().filter(|h| !h.is_empty()).ok_or("no host")?;
    let port: u16 = it.next().and_then(|p| p.parse().ok()).ok_or("bad port")?;
    let rec = Record::parse_fields(it.next().unwrap_or(""))?;
    Ok((Key::new(proto, host, port), rec))
}

/// Parses the text of a memory file: the records it holds, and the problems met (each
/// starting with `:LINE: ` or `: `, to follow the file's name). A foreign, non-UTF-8 or
/// headerless file gives no record; a bad line is skipped; a last line without its
/// line feed (a writer cut short) is ignored.
pub fn parse_file(data: &[u8]) -> (Vec<(Key, Record)>, Vec<String>) {
    let mut problems = Vec::new();
    let Ok(text) = std::str::from_utf8(data) else {
        problems.push(": not a memory file (not UTF-8); ignored".to_string());
        return (Vec::new(), problems);
    };
    let mut lines = text.split('\n');
    if lines.next() != Some(FILE_MAGIC) {
        problems.push(format!(": not a memory file (no {FILE_MAGIC:?} header); ignored"));
        return (Vec::new(), problems);
    }
    let mut out = Vec::new();
    let complete = text.ends_with('\n');
    let all: Vec<&str> = lines.collect();
    for (i, line) in all.iter().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !complete && i == all.len() - 1 {
            problems.push(": truncated last line ignored".to_string());
            break;
        }
        match parse_line(line) {
            Ok(kr) => out.push(kr),
            Err(e) => problems.push(format!(":{}: {e}; line ignored", i + 2)),
        }
    }
    (out, problems)
}
