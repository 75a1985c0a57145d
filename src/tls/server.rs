//! Server-side TLS configuration: the certificate chain and key (from PEM files,
//! memory, or generated self-signed), checked for a match when the config is built.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::error::{Code, Error, Result};
use crate::tls::tickets::Tickets;

/// Parses every certificate of a PEM buffer; none is an error.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        out.push(item.map_err(|e| Error::new(Code::CertificateLoad, format!("bad PEM certificate: {e}")))?);
    }
    if out.is_empty() {
        return Err(Error::new(Code::CertificateLoad, "no CERTIFICATE block in the PEM data"));
    }
    Ok(out)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM buffer.
pub fn parse_pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::new(Code::PrivateKeyLoad, format!("no usable private key in the PEM data: {e}")))
}

/// Loads a chain and key and checks that the key belongs to the end-entity certificate.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = parse_pem_certs(chain_pem)?;
    let key = parse_pem_key(key_pem)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            Error::new(Code::KeyMismatch, "the private key does not match the certificate's public key")
        }
        other => Error::new(Code::PrivateKeyLoad, format!("private key refused: {other}")),
    })?;
    // from_der lets an unknown consistency pass; we insist on a positive match.
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(e) => Err(Error::new(Code::KeyMismatch, format!("cannot prove the key matches: {e}"))),
    }
}

/// Generates a self-signed certificate (ECDSA P-256) for `names`: the embedded default
/// that lets a demo server start without files. Returns (certificate PEM, key PEM).
pub fn self_signed(names: &[String]) -> Result<(String, String)> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::new(Code::CertificateLoad, format!("cannot generate a certificate: {e}")))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Builds the rustls server config for a certified key, issuing and opening session
/// tickets with `tickets`.
pub fn server_config(ck: Arc<CertifiedKey>, tickets: Arc<Tickets>) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(crate::tls::provider::provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Code::TlsConfig, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Single(ck)));
    // Stateless resumption tickets under a secret fixed when our config is built (drawn
    // then, or the caller's keys), so a server that forks per connection (as MTAs do)
    // or runs threads resumes sessions that another process or thread began, and
    // servers given the same keys resume each other's; the in-memory session cache
    // could not, nor can rustls' own ticketer (see `tls::tickets`).
    cfg.ticketer = tickets;
    Ok(Arc::new(cfg))
}

/// The server's TLS config, with the files it came from: checked at every STARTTLS
/// and reloaded when they change (a renewed certificate needs no restart). When the
/// files cannot be read or no longer load, TLS is unavailable until they are fixed:
/// the server answers 454 and stops advertising STARTTLS. A reload keeps the ticket
/// secret: tickets issued before a certificate renewal still resume after it, in every
/// child, whichever of them reloads first.
#[derive(Debug)]
pub struct ServerTls {
    files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    tickets: Arc<Tickets>,
    current: parking_lot::Mutex<(Option<FileStamps>, Option<Arc<ServerConfig>>)>,
}

type FileStamps = (std::time::SystemTime, std::time::SystemTime);

impl ServerTls {
    /// A config from PEM data in memory: always available.
    pub fn fixed(chain_pem: &[u8], key_pem: &[u8], tickets: Arc<Tickets>) -> Result<Self> {
        let cfg = server_config(certified_key(chain_pem, key_pem)?, tickets.clone())?;
        Ok(ServerTls { files: None, tickets, current: parking_lot::Mutex::new((None, Some(cfg))) })
    }

    /// A config from files, loaded now (an error now is a build error).
    pub fn from_files(chain: &std::path::Path, key: &std::path::Path, tickets: Arc<Tickets>) -> Result<Self> {
        let s = ServerTls {
            files: Some((chain.to_path_buf(), key.to_path_buf())),
            tickets,
            current: parking_lot::Mutex::new((None, None)),
        };
        s.reload()?;
        Ok(s)
    }

    fn stamps(&self) -> std::io::Result<Option<FileStamps>> {
        let Some((c, k)) = &self.files else { return Ok(None) };
        // Opening proves readability; the modification times tell a renewal.
        let mc = std::fs::File::open(c)?.metadata()?.modified()?;
        let mk = std::fs::File::open(k)?.metadata()?.modified()?;
        Ok(Some((mc, mk)))
    }

    fn reload(&self) -> Result<Arc<ServerConfig>> {
        let (c, k) = self.files.as_ref().ok_or_else(|| Error::new(Code::InvalidState, "no certificate files"))?;
        let stamps = self.stamps().map_err(|e| Error::new(Code::CertificateLoad, format!("{} / {}: {e}", c.display(), k.display())))?;
        let chain = std::fs::read(c).map_err(|e| Error::new(Code::CertificateLoad, format!("{}: {e}", c.display())))?;
        let key = std::fs::read(k).map_err(|e| Error::new(Code::PrivateKeyLoad, format!("{}: {e}", k.display())))?;
        let cfg = server_config(certified_key(&chain, &key)?, self.tickets.clone())?;
        *self.current.lock() = (stamps, Some(cfg.clone()));
        Ok(cfg)
    }

    /// The config to serve with now, or why TLS cannot start.
    pub fn now(&self) -> Result<Arc<ServerConfig>> {
        if self.files.is_none() {
            return self.current.lock().1.clone().ok_or_else(|| Error::new(Code::NoCertificate, "no certificate"));
        }
        let stamps = self.stamps().map_err(|e| {
            Error::new(Code::CertificateLoad, format!("the certificate or key file cannot be read now: {e}"))
        })?;
        {
            let cur = self.current.lock();
            if cur.0 == stamps {
                if let Some(cfg) = &cur.1 {
                    return Ok(cfg.clone());
                }
            }
        }
        self.reload()
    }
}

#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads() {
        let (c, k) = self_signed(&["localhost".into()]).unwrap();
        certified_key(c.as_bytes(), k.as_bytes()).unwrap();
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (c, _) = self_signed(&["a".into()]).unwrap();
        let (_, k2) = self_signed(&["b".into()]).unwrap();
        let e = certified_key(c.as_bytes(), k2.as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::KeyMismatch);
    }

    #[test]
    fn a_renewed_certificate_keeps_the_ticket_secret() {
        // Each forked child reloads on its own; a secret drawn per reload would leave
        // the children with different ones, and tickets from before the renewal dead.
        let dir = std::env::temp_dir().join(format!("mailtls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
        let write = |names: &[String], stamp: u64| {
            let (c, k) = self_signed(names).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(stamp);
            for (path, pem) in [(&cp, c), (&kp, k)] {
                std::fs::write(path, pem).unwrap();
                std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
            }
        };
        write(&["a".into()], 1_000_000);
        let tls = ServerTls::from_files(&cp, &kp, Arc::new(Tickets::new().unwrap())).unwrap();
        let before = tls.now().unwrap();
        let ticket = before.ticketer.encrypt(b"state").unwrap();
        write(&["b".into()], 2_000_000);
        let after = tls.now().unwrap();
        assert!(!Arc::ptr_eq(&before, &after), "the renewal was not loaded");
        assert_eq!(after.ticketer.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_pem_is_a_load_error() {
        assert_eq!(parse_pem_certs(b"hello").unwrap_err().code, Code::CertificateLoad);
        assert_eq!(parse_pem_key(b"hello").unwrap_err().code, Code::PrivateKeyLoad);
    }
}
