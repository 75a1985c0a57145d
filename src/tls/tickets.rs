//! Session tickets that every server process holding the same secret can open: the
//! children forked from one config, and, with caller-supplied keys, servers started
//! on their own (several hosts, a restarted master, Postfix-style processes that each
//! build their config).
//!
//! Why not rustls' own `Ticketer`: mail servers fork a child per connection after
//! building the config (Postfix's smtpd, inetd-style servers, `mailtls-server`), and
//! rustls' ticketer keeps per-process state that breaks resumption across children:
//! it refuses any ticket longer than the longest one *this process* has issued (a
//! fresh child has issued none, so it refuses every ticket), and its six-hourly
//! rotation draws a new random key in each process that rotates (after six hours of
//! uptime every child would issue tickets under a key of its own).
//!
//! Keys. Every ticket key follows from a master secret by HKDF-SHA256: the key of each
//! six-hour period from the secret and the period's number, so every process computes
//! the same key for the same period without sharing anything but the secret, and
//! rotation within a secret is a pure function of the clock. The master secret is
//! either drawn at random when the config is built (the default: shared by every
//! child forked after the build, by nothing else), or given by the caller
//! ([`TicketKeys`], from memory or a key file): a current key, which issues tickets,
//! and optionally the previous one, which still opens them, so that while a rotation
//! reaches every server a ticket issued under the old key still resumes.
//!
//! A ticket is `key id (8) || period (8, big-endian) || nonce (12) ||
//! AES-256-GCM(state) || tag (16)`. The key id is derived from the master secret under
//! a label of its own: it names the secret without revealing it, so opening picks the
//! secret by id, without trial decryption, and a ticket under a secret this server does
//! not hold is simply not resumed (the handshake is a full one), never an error. Id and
//! period are authenticated as associated data; a ticket opens during its period and
//! the next, under the current or the previous secret alike.
//!
//! Key file ([`TicketKeys::from_file`]): text, one key per line in hex (at least 64
//! digits, 32 bytes; at most 128, 64 bytes; `openssl rand -hex 32` makes one), the
//! first key line the current key, the second, optional, the previous one; blank lines
//! and lines starting with `#` are ignored, a key line holds nothing but the key. The
//! file must give group and others no permission at all (0600 or 0400), as ssh asks of
//! a private key; any other mode, a third key or a malformed line is refused, naming the
//! mode or the line, never quoting a key.
//!
//! The price, stated plainly. With the default, every period's key follows from the
//! master secret, which lives as long as the config: someone who reads a server
//! process's memory can open every ticket the config ever issued (and so learn the
//! resumption secrets of those sessions), where rustls' ticketer would expose the last
//! twelve hours. That is the same exposure as OpenSSL's default (one random ticket key
//! per SSL_CTX, never rotated), which the forking MTAs this serves run today; a server
//! that wants it bounded rebuilds its config (a reload) at the interval it chooses,
//! and that draws a new secret. With caller keys the exposure is wider and lasts as
//! long as the key does: whoever holds the key file, or any server's memory, can open
//! every ticket issued under it by every server that shares it. With a ticket's
//! secrets they can decrypt a recorded TLS 1.2 session that used it, and resume as the
//! server towards a client that still holds the ticket (TLS 1.3 resumption here is
//! always with (EC)DHE, so recorded TLS 1.3 traffic stays protected). Stolen ticket
//! keys undo forward secrecy (RFC 5077 section 5.5, "Ticket Protection Key
//! Management"; A. Langley, "How to botch TLS forward secrecy", 2013), so keep the file
//! off backups and shared disks and rotate it (daily, say: a fresh current key, the old
//! one as the previous), the scheme of nginx's `ssl_session_ticket_key` (the first key
//! encrypts, the others only decrypt); Postfix's tlsmgr(8) keeps one host's ticket keys
//! in its memory and replaces them as `smtpd_tls_session_cache_timeout` runs out.
//!
//! Nonces are random (96 bits) under a key that changes every period: servers sharing a
//! key stay under the 2^32 messages per key that NIST SP 800-38D allows random GCM
//! nonces unless together they issue some 200,000 tickets a second.

use std::path::Path;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Code, Error, Result};

/// How long one key issues tickets; a ticket opens for one more period after it.
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

/// How far behind the issuing server's clock a server may be and still open a ticket
/// issued just after a period began there (five minutes, as Kerberos allows).
const MAX_SKEW: u64 = 5 * 60;

/// The shortest caller-supplied key, in bytes: 256 bits of secret.
pub const MIN_KEY_LEN: usize = 32;

/// The longest caller-supplied key, in bytes (HKDF takes any length; the bound keeps
/// key files and arguments small and checkable).
pub const MAX_KEY_LEN: usize = 64;

/// The most bytes a key file may hold (two keys, and room for comments).
const MAX_FILE_LEN: u64 = 64 * 1024;

const ID_LEN: usize = 8;
const PERIOD_LEN: usize = 8;
const HEAD_LEN: usize = ID_LEN + PERIOD_LEN;
const TAG_LEN: usize = 16;
const SALT: &[u8] = b"mailtls session ticket keys v2";
const ID_LABEL: &[u8] = b"key id";
const PERIOD_LABEL: &[u8] = b"period key";

/// Caller-supplied ticket keys: the current one issues tickets, the previous one (the
/// current one until the last rotation) still opens them. Zeroed when dropped; never
/// printed (`Debug` says only whether there is a previous key).
#[derive(Clone)]
pub struct TicketKeys {
    current: Zeroizing<Vec<u8>>,
    previous: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys").field("previous", &self.previous.is_some()).finish_non_exhaustive()
    }
}

fn length_problem(len: usize) -> Option<String> {
    if len < MIN_KEY_LEN {
        Some(format!("the key has {len} bytes; a ticket key needs at least {MIN_KEY_LEN} bytes of secret"))
    } else if len > MAX_KEY_LEN {
        Some(format!("the key has {len} bytes; a ticket key has at most {MAX_KEY_LEN}"))
    } else {
        None
    }
}

impl TicketKeys {
    /// Keys from memory, each `MIN_KEY_LEN..=MAX_KEY_LEN` bytes of secret; another
    /// length is `InvalidParameter`.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Result<Self> {
        for (which, key) in [("current", Some(current)), ("previous", previous)] {
            if let Some(problem) = key.and_then(|k| length_problem(k.len())) {
                return Err(Error::new(Code::InvalidParameter, format!("{which} session ticket key: {problem}")));
            }
        }
        Ok(TicketKeys {
            current: Zeroizing::new(current.to_vec()),
            previous: previous.map(|p| Zeroizing::new(p.to_vec())),
        })
    }

    /// Reads a key file (format in the module comment). A file open to group or others,
    /// unreadable, too large or malformed is `TicketKeyLoad`, its detail naming the file
    /// and the mode or the line.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let fail = |what: String| Error::new(Code::TicketKeyLoad, format!("{}: {what}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        // The mode of the file opened, not of whatever the name points to a moment later.
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "mode {mode:04o} opens the session ticket keys to group or others; \
                 the file must be the owner's alone (chmod 600)"
            )));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(fail(format!("{} bytes; a key file holds at most {MAX_FILE_LEN}", meta.len())));
        }
        let mut data = Zeroizing::new(Vec::new());
        file.take(MAX_FILE_LEN + 1).read_to_end(&mut data).map_err(|e| fail(e.to_string()))?;
        if data.len() as u64 > MAX_FILE_LEN {
            return Err(fail(format!("more than {MAX_FILE_LEN} bytes; a key file holds less")));
        }
        Self::parse(&data).map_err(|e| Error::new(Code::TicketKeyLoad, format!("{}{}", path.display(), e.detail)))
    }

    /// Parses the text of a key file. An error's detail starts with `:LINE: ` or `: `,
    /// to follow the file's name.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let fail = |what: String| Error::new(Code::TicketKeyLoad, what);
        let mut keys: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let line = raw.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            if keys.len() == 2 {
                return Err(fail(format!(
                    ":{n}: a third key; the file holds the current key and at most one previous key"
                )));
            }
            if let Some(at) = line.iter().position(|b| !b.is_ascii_hexdigit()) {
                return Err(fail(format!(
                    ":{n}: column {}: not a hex digit; a key line holds the key in hex and nothing else \
                     (comments go on lines of their own, starting with #)",
                    raw.len() - raw.trim_ascii_start().len() + at + 1
                )));
            }
            if line.len() % 2 != 0 {
                return Err(fail(format!(":{n}: an odd number of hex digits ({})", line.len())));
            }
            if let Some(problem) = length_problem(line.len() / 2) {
                return Err(fail(format!(":{n}: {problem} ({} to {} hex digits)", 2 * MIN_KEY_LEN, 2 * MAX_KEY_LEN)));
            }
            let mut key = Zeroizing::new(vec![0u8; line.len() / 2]);
            for (j, pair) in line.chunks(2).enumerate() {
                key[j] = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
            }
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let Some(current) = keys.next() else {
            return Err(fail(format!(
                ": no key; the first key line (at least {} hex digits) is the current key, \
                 an optional second one the previous key",
                2 * MIN_KEY_LEN
            )));
        };
        Ok(TicketKeys { current, previous: keys.next() })
    }
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

/// One master secret, kept only as its HKDF pseudorandom key (which aws-lc-rs zeroes
/// when dropped), and the id its tickets carry.
#[derive(Clone)]
struct Master {
    prk: hkdf::Prk,
    id: [u8; ID_LEN],
}

struct KeyLen(usize);

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Master {
    fn new(secret: &[u8]) -> Result<Self> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        let mut id = [0u8; ID_LEN];
        prk.expand(&[ID_LABEL], KeyLen(ID_LEN))
            .and_then(|okm| okm.fill(&mut id))
            .map_err(|_| Error::new(Code::TlsConfig, "cannot derive the session ticket key id"))?;
        Ok(Master { prk, id })
    }

    fn key(&self, period: u64) -> Option<RandomizedNonceKey> {
        let number = period.to_be_bytes();
        let info = [PERIOD_LABEL, &number[..]];
        let okm = self.prk.expand(&info, KeyLen(32)).ok()?;
        let mut key = Zeroizing::new([0u8; 32]);
        okm.fill(&mut key[..]).ok()?;
        RandomizedNonceKey::new(&AES_256_GCM, &key[..]).ok()
    }
}

/// The server's ticket producer: keys derived per period from the current master
/// secret; tickets open under the current or the previous one.
#[derive(Clone)]
pub struct Tickets {
    current: Master,
    previous: Option<Master>,
    caller_keys: bool,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("period_secs", &PERIOD_SECS)
            .field("caller_keys", &self.caller_keys)
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// A producer with a fresh random master secret: call it when the config is built,
    /// before any fork, so that every child shares the secret.
    pub fn new() -> Result<Self> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut secret[..])
            .map_err(|_| Error::new(Code::TlsConfig, "no randomness for the session ticket secret"))?;
        Ok(Tickets { current: Master::new(&secret[..])?, previous: None, caller_keys: false })
    }

    /// A producer under the caller's keys: every server given the same keys opens the
    /// tickets of the others.
    pub fn with_keys(keys: &TicketKeys) -> Result<Self> {
        Ok(Tickets {
            current: Master::new(&keys.current)?,
            previous: keys.previous.as_deref().map(|p| Master::new(p)).transpose()?,
            caller_keys: true,
        })
    }

    /// The master secret a ticket names, if this producer holds it.
    fn master(&self, id: &[u8]) -> Option<&Master> {
        std::iter::once(&self.current).chain(self.previous.as_ref()).find(|m| m.id[..] == *id)
    }

    fn seal_at(&self, now: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let period = now / PERIOD_SECS;
        let mut head = [0u8; HEAD_LEN];
        head[..ID_LEN].copy_from_slice(&self.current.id);
        head[ID_LEN..].copy_from_slice(&period.to_be_bytes());
        let mut body = plain.to_vec();
        let nonce = self.current.key(period)?.seal_in_place_append_tag(Aad::from(head), &mut body).ok()?;
        let mut out = Vec::with_capacity(HEAD_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < HEAD_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (head, rest) = ticket.split_at(HEAD_LEN);
        let (id, period) = head.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let master = self.master(id)?;
        let period = u64::from_be_bytes(period.try_into().ok()?);
        let current = now / PERIOD_SECS;
        // Its own period or the one before; or the next one when this host's clock is
        // at most MAX_SKEW behind the server that issued it (servers sharing keys
        // across hosts do not share a clock).
        let next_soon = period == current + 1 && period * PERIOD_SECS - now <= MAX_SKEW;
        if period != current && period.checked_add(1) != Some(current) && !next_soon {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = master.key(period)?.open_in_place(nonce, Aad::from(head), &mut body).ok()?.to_vec();
        body.zeroize();
        Some(plain)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl rustls::server::ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// The lifetime every ticket is sure of (one opens for one to two periods).
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(now_secs(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open_at(now_secs(), ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    const T0: u64 = 1_700_000_000;
    const OLD: [u8; 32] = [0x11; 32];
    const NEW: [u8; 32] = [0x22; 32];

    fn keyed(current: &[u8], previous: Option<&[u8]>) -> Tickets {
        Tickets::with_keys(&TicketKeys::new(current, previous).unwrap()).unwrap()
    }

    #[test]
    fn a_ticket_opens_in_a_producer_that_never_issued_one() {
        // What a forked child is: the same secret, none of the parent's history.
        let parent = Tickets::new().unwrap();
        let child = parent.clone();
        let t = parent.encrypt(b"session state").unwrap();
        assert_eq!(child.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        let u = child.encrypt(b"other state").unwrap();
        assert_eq!(parent.decrypt(&u).as_deref(), Some(&b"other state"[..]));
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let k = Tickets::new().unwrap();
        let t = k.seal_at(T0, b"s").unwrap();
        let start = T0 - T0 % PERIOD_SECS;
        assert!(k.open_at(start, &t).is_some());
        assert!(k.open_at(start + 2 * PERIOD_SECS - 1, &t).is_some());
        assert!(k.open_at(start + 2 * PERIOD_SECS, &t).is_none());
        // A clock up to five minutes behind the issuer's still opens it, not more.
        assert!(k.open_at(start - MAX_SKEW, &t).is_some());
        assert!(k.open_at(start - MAX_SKEW - 1, &t).is_none(), "a ticket from the future is refused");
    }

    #[test]
    fn rotated_keys_are_the_same_in_every_process_and_differ_per_period() {
        let a = Tickets::new().unwrap();
        let b = a.clone();
        let later = T0 + 5 * PERIOD_SECS;
        let t = a.seal_at(later, b"s").unwrap();
        assert!(b.open_at(later, &t).is_some());
        // The period is authenticated: relabelling a ticket to a later period fails.
        let mut relabelled = t.clone();
        relabelled[ID_LEN..HEAD_LEN].copy_from_slice(&(later / PERIOD_SECS + 1).to_be_bytes());
        assert!(b.open_at(later + PERIOD_SECS, &relabelled).is_none());
    }

    #[test]
    fn foreign_truncated_and_altered_tickets_are_refused() {
        let a = Tickets::new().unwrap();
        let other = Tickets::new().unwrap();
        let t = a.seal_at(T0, b"session state").unwrap();
        assert!(other.open_at(T0, &t).is_none());
        assert!(a.open_at(T0, &t[..t.len() - 1]).is_none());
        assert!(a.open_at(T0, &t[..10]).is_none());
        assert!(a.open_at(T0, &[]).is_none());
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(a.open_at(T0, &bad).is_none(), "byte {i} altered");
        }
    }

    #[test]
    fn servers_built_apart_with_the_same_key_open_each_others_tickets() {
        // Two processes that share nothing but the key, not even a fork.
        let a = keyed(&NEW, None);
        let b = keyed(&NEW, None);
        let t = a.seal_at(T0, b"session state").unwrap();
        assert_eq!(b.open_at(T0, &t).as_deref(), Some(&b"session state"[..]));
        assert!(keyed(&OLD, None).open_at(T0, &t).is_none(), "another key opens nothing");
        assert!(Tickets::new().unwrap().open_at(T0, &t).is_none(), "nor does a random secret");
    }

    #[test]
    fn the_previous_key_opens_but_never_issues() {
        let before = keyed(&OLD, None);
        let after = keyed(&NEW, Some(&OLD));
        let old_ticket = before.seal_at(T0, b"old").unwrap();
        assert_eq!(after.open_at(T0, &old_ticket).as_deref(), Some(&b"old"[..]));
        // A server that has rotated issues under the new key only: the old one cannot open it.
        let new_ticket = after.seal_at(T0, b"new").unwrap();
        assert!(before.open_at(T0, &new_ticket).is_none());
        assert!(keyed(&NEW, None).open_at(T0, &new_ticket).is_some());
        // Once the old key is dropped, its tickets no longer resume.
        assert!(keyed(&NEW, None).open_at(T0, &old_ticket).is_none());
        // The previous key's tickets still expire by period.
        assert!(after.open_at(T0 + 2 * PERIOD_SECS, &old_ticket).is_none());
    }

    #[test]
    fn a_ticket_names_its_key_and_opening_picks_that_key() {
        let old = keyed(&OLD, None);
        let new = keyed(&NEW, None);
        let both = keyed(&NEW, Some(&OLD));
        let t_old = old.seal_at(T0, b"s").unwrap();
        let t_new = new.seal_at(T0, b"s").unwrap();
        let t_both = both.seal_at(T0, b"s").unwrap();
        // The id is a function of the key alone, the same in every process.
        assert_eq!(t_old[..ID_LEN], old.current.id);
        assert_eq!(t_new[..ID_LEN], new.current.id);
        assert_eq!(t_both[..ID_LEN], new.current.id, "tickets are issued under the current key");
        assert_ne!(old.current.id, new.current.id);
        assert_eq!(both.master(&old.current.id).map(|m| m.id), Some(old.current.id));
        assert_eq!(both.master(&new.current.id).map(|m| m.id), Some(new.current.id));
        // The id is authenticated: a ticket relabelled to the other key is refused.
        let mut relabelled = t_new.clone();
        relabelled[..ID_LEN].copy_from_slice(&old.current.id);
        assert!(both.open_at(T0, &relabelled).is_none());
        // An unknown id is not resumed, whatever follows it.
        let mut unknown = t_new.clone();
        unknown[..ID_LEN].copy_from_slice(&[0; ID_LEN]);
        assert!(both.master(&[0; ID_LEN]).is_none());
        assert!(both.open_at(T0, &unknown).is_none());
    }

    #[test]
    fn keys_shorter_or_longer_than_allowed_are_invalid_parameters() {
        let cases: [(&[u8], Option<&[u8]>); 4] = [(&[7; 31], None), (&[7; 32], Some(&[7; 31])), (&[7; 65], None), (&[], None)];
        for (cur, prev) in cases {
            let e = TicketKeys::new(cur, prev).unwrap_err();
            assert_eq!(e.code, Code::InvalidParameter);
            assert!(e.detail.contains("bytes"), "{}", e.detail);
        }
        TicketKeys::new(&[7; 32], Some(&[8; 64])).unwrap();
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let k = TicketKeys::new(&[0xab; 32], Some(&[0xcd; 32])).unwrap();
        let t = Tickets::with_keys(&k).unwrap();
        for text in [format!("{k:?}"), format!("{t:?}"), format!("{k:#?}"), format!("{t:#?}")] {
            for needle in ["ab", "AB", "171", "cd", "205"] {
                assert!(!text.contains(needle), "{needle} in {text}");
            }
        }
    }

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "FFFEFDFCFBFAF9F8F7F6F5F4F3F2F1F0EFEEEDECEBEAE9E8E7E6E5E4E3E2E1E0";

    #[test]
    fn a_key_file_gives_the_current_key_then_the_previous() {
        let text = format!("# ticket keys, rotated daily\n\n  {A}  \r\n# the previous one\n{B}\n");
        let k = TicketKeys::parse(text.as_bytes()).unwrap();
        assert_eq!(k.current.as_slice(), (0u8..32).collect::<Vec<_>>());
        assert_eq!(k.previous.as_deref().map(|p| p.to_vec()), Some((224u8..=255).rev().collect::<Vec<_>>()));
        let one = TicketKeys::parse(A.as_bytes()).unwrap();
        assert!(one.previous.is_none());
        let long = "ab".repeat(MAX_KEY_LEN);
        assert_eq!(TicketKeys::parse(long.as_bytes()).unwrap().current.len(), MAX_KEY_LEN);
    }

    #[test]
    fn a_malformed_key_file_is_refused_naming_the_line_and_never_the_key() {
        let short = &A[..62];
        let cases = [
            (format!("# c\n{short}\n"), ":2: the key has 31 bytes"),
            (format!("{A}\n{A}0\n"), ":2: an odd number of hex digits (65)"),
            (format!("{A} # current\n"), ":1: column 65: not a hex digit"),
            (format!("\n\n  {}zz\n", &A[..10]), ":3: column 13: not a hex digit"),
            (format!("{A}\n{B}\n\n{A}\n"), ":4: a third key"),
            (format!("{}\n", "ab".repeat(MAX_KEY_LEN + 1)), ":1: the key has 65 bytes"),
            ("# only a comment\n\n".to_string(), ": no key"),
            (String::new(), ": no key"),
        ];
        for (text, want) in cases {
            let e = TicketKeys::parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.code, Code::TicketKeyLoad);
            assert!(e.detail.starts_with(want), "{text:?}: {}", e.detail);
            assert!(!e.detail.contains(&A[..16]) && !e.detail.contains(&B[..16]), "{}", e.detail);
        }
    }

    #[test]
    fn a_key_file_open_to_group_or_others_is_refused_naming_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mailtls-tickets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, format!("{A}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = TicketKeys::from_file(&path).unwrap_err();
            assert_eq!(e.code, Code::TicketKeyLoad);
            let want = format!("{}: mode {mode:04o} opens the session ticket keys to group or others", path.display());
            assert!(e.detail.starts_with(&want), "{}", e.detail);
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(TicketKeys::from_file(&path).unwrap().current.len(), 32);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, format!("{A}\nnot a key\n")).unwrap();
        let e = TicketKeys::from_file(&path).unwrap_err();
        assert!(e.detail.starts_with(&format!("{}:2: column 1", path.display())), "{}", e.detail);
        let e = TicketKeys::from_file(&dir.join("missing")).unwrap_err();
        assert_eq!(e.code, Code::TicketKeyLoad);
        assert!(e.detail.contains("missing"), "{}", e.detail);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
