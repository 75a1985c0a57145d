//! Session tickets that every process forked from the server's config can open.
//!
//! Why not rustls' own `Ticketer`: mail servers fork a child per connection after
//! building the config (Postfix's smtpd, inetd-style servers, `mailtls-server`), and
//! rustls' ticketer keeps per-process state that breaks resumption across children:
//! it refuses any ticket longer than the longest one *this process* has issued (a
//! fresh child has issued none, so it refuses every ticket), and its six-hourly
//! rotation draws a new random key in each process that rotates (after six hours of
//! uptime every child would issue tickets under a key of its own).
//!
//! Here the only random value is a master secret drawn when the config is built. The
//! key of each period is derived from it and the period's number (HKDF-SHA256), so
//! every process computes the same key for the same period without sharing anything
//! after the fork; rotation is a pure function of the clock. A ticket is
//! `period (8 bytes) || nonce (12) || AES-256-GCM(state) || tag (16)`, the period
//! authenticated as associated data; it opens during its period and the next one.
//!
//! The price, stated plainly: every period's key follows from the master secret, which
//! lives as long as the config. Someone who reads a server process's memory can open
//! every ticket the config ever issued (and so learn the resumption secrets of those
//! sessions), where rustls' ticketer would expose the last twelve hours. That is the
//! same exposure as OpenSSL's default (one random ticket key per SSL_CTX, never
//! rotated), which the forking MTAs this serves run today; a server that wants it
//! bounded rebuilds its config (a reload) at the interval it chooses, and that draws a
//! new secret.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;

use crate::error::{Code, Error, Result};

/// How long one key issues tickets; a ticket opens for one more period after it.
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

const PERIOD_LEN: usize = 8;
const TAG_LEN: usize = 16;
const SALT: &[u8] = b"mailtls session ticket keys v1";

/// The server's ticket producer: keys derived per period from one master secret.
pub struct Tickets {
    master: [u8; 32],
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").field("period_secs", &PERIOD_SECS).finish_non_exhaustive()
    }
}

struct KeyLen(usize);

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Tickets {
    /// A producer with a fresh random master secret: call it when the config is built,
    /// before any fork, so that every child shares the secret.
    pub fn new() -> Result<Self> {
        let mut master = [0u8; 32];
        aws_lc_rs::rand::fill(&mut master)
            .map_err(|_| Error::new(Code::TlsConfig, "no randomness for the session ticket secret"))?;
        Ok(Tickets { master })
    }

    fn key(&self, period: u64) -> Option<RandomizedNonceKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&self.master);
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let okm = prk.expand(&info, KeyLen(32)).ok()?;
        let mut key = [0u8; 32];
        okm.fill(&mut key).ok()?;
        RandomizedNonceKey::new(&AES_256_GCM, &key).ok()
    }

    fn seal_at(&self, now: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let period = now / PERIOD_SECS;
        let head = period.to_be_bytes();
        let mut body = plain.to_vec();
        let nonce = self.key(period)?.seal_in_place_append_tag(Aad::from(head), &mut body).ok()?;
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < PERIOD_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (head, rest) = ticket.split_at(PERIOD_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let period = u64::from_be_bytes(head.try_into().ok()?);
        let current = now / PERIOD_SECS;
        if period != current && period.checked_add(1) != Some(current) {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = self.key(period)?.open_in_place(nonce, Aad::from(head), &mut body).ok()?;
        Some(plain.to_vec())
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

    #[test]
    fn a_ticket_opens_in_a_producer_that_never_issued_one() {
        // What a forked child is: the same secret, none of the parent's history.
        let parent = Tickets::new().unwrap();
        let child = Tickets { master: parent.master };
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
        assert!(k.open_at(start - 1, &t).is_none(), "a ticket from the future is refused");
    }

    #[test]
    fn rotated_keys_are_the_same_in_every_process_and_differ_per_period() {
        let a = Tickets::new().unwrap();
        let b = Tickets { master: a.master };
        let later = T0 + 5 * PERIOD_SECS;
        let t = a.seal_at(later, b"s").unwrap();
        assert!(b.open_at(later, &t).is_some());
        // The period is authenticated: relabelling a ticket to a later period fails.
        let mut relabelled = t.clone();
        relabelled[..PERIOD_LEN].copy_from_slice(&(later / PERIOD_SECS + 1).to_be_bytes());
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
}
