//! Client-side TLS configuration: trust anchors, the certificate policy, and the
//! prebuilt `ClientConfig` each session borrows.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::auth::dane::DaneVerifier;
use crate::auth::Check;
use crate::error::{Code, Error, Result};
use crate::recovery::Rung;

/// Where trust anchors come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustSource {
    /// The operating system's store (rustls-native-certs).
    System,
    /// A PEM file of CA certificates.
    CaFile(std::path::PathBuf),
}

/// Loads trust anchors. An empty store is an error: nothing could ever verify.
pub fn load_roots(source: &TrustSource) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match source {
        TrustSource::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| e.to_string()).unwrap_or_default();
                return Err(Error::new(
                    Code::TrustAnchors,
                    format!("no usable CA certificate in the system store {why}"),
                ));
            }
        }
        TrustSource::CaFile(path) => {
            let certs = read_pem_certs_file(path).map_err(|e| Error::new(Code::TrustAnchors, e.detail))?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::new(
                    Code::TrustAnchors,
                    format!("{}: no usable CA certificate ({ignored} ignored)", path.display()),
                ));
            }
        }
    }
    Ok(roots)
}

/// Reads every certificate of a PEM file.
pub fn read_pem_certs_file(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path)
        .map_err(|e| Error::new(Code::CertificateLoad, format!("{}: {e}", path.display())))?;
    crate::tls::server::parse_pem_certs(&data)
        .map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.detail)))
}

/// The client's TLS side, built once per config and shared by every session.
#[derive(Debug)]
pub struct ClientTls {
    /// The verifier that enforces the chain and name (policy verify), or only records (may, encrypt).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The prebuilt config of each rung, with and without SNI; index = rung * 2 + sni_off.
    rungs: Arc<RungConfigs>,
    enforce: bool,
    provider: Arc<CryptoProvider>,
    cache: Arc<rustls::client::ClientSessionMemoryCache>,
    /// The configs of the DANE and MTA-STS checks met lately, by check: a client
    /// delivers to the same few MX hosts again and again, and rustls resumes a session
    /// only under the verifier (the same Arc) that accepted it. Emptied at `CHECKS_MAX`.
    checks: parking_lot::Mutex<std::collections::HashMap<Check, Arc<RungConfigs>>>,
}

/// One config per rung and SNI setting; index = rung * 2 + sni_off.
pub type RungConfigs = Vec<Arc<ClientConfig>>;

const CHECKS_MAX: usize = 256;

impl ClientTls {
    /// Builds the client TLS side. With `enforce` the chain and name are checked by
    /// rustls during the handshake; without it the handshake accepts any certificate
    /// (signatures are still checked) and [`ClientTls::check_chain`] records the verdict.
    pub fn new(trust: Option<&TrustSource>, enforce: bool) -> Result<Self> {
        let provider = Arc::new(crate::tls::provider::provider());
        let webpki = match trust {
            Some(src) => match load_roots(src) {
                Ok(roots) => Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| Error::new(Code::TrustAnchors, e.to_string()))?,
                ),
                Err(e) if enforce => return Err(e),
                // An explicit CA file must load; the system store is only a bonus
                // for the report under may and encrypt.
                Err(e) if matches!(src, TrustSource::CaFile(_)) => return Err(e),
                Err(_) => None,
            },
            None if enforce => {
                return Err(Error::new(Code::TrustAnchors, "policy verify needs trust anchors"))
            }
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (&webpki, enforce) {
            (Some(w), true) => w.clone(),
            _ => Arc::new(RecordOnly { provider: provider.clone() }),
        };
        // One session cache for every rung that resumes: a ticket from one rung is
        // offered by the next where rustls allows it.
        let cache = Arc::new(rustls::client::ClientSessionMemoryCache::new(256));
        let rungs = Arc::new(build_rungs(&provider, verifier, &cache)?);
        Ok(ClientTls { webpki, rungs, enforce, provider, cache, checks: Default::default() })
    }

    /// The configs for a DANE or MTA-STS check (`Check::Config`: the config's own).
    pub fn configs_for(&self, check: &Check) -> Result<Arc<RungConfigs>> {
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Config => return Ok(self.rungs.clone()),
            Check::Dane(records, names) => Arc::new(DaneVerifier::new(records, names, self.provider.clone())),
            Check::WebPki(names) => match &self.webpki {
                Some(w) => Arc::new(NamedWebPki { inner: w.clone(), names: names.clone() }),
                None => {
                    return Err(Error::new(
                        Code::TrustAnchors,
                        "MTA-STS enforce needs trust anchors to check the certificate, and none could be loaded",
                    ))
                }
            },
        };
        if let Some(c) = self.checks.lock().get(check) {
            return Ok(c.clone());
        }
        let configs = Arc::new(build_rungs(&self.provider, verifier, &self.cache)?);
        let mut checks = self.checks.lock();
        if checks.len() >= CHECKS_MAX {
            checks.clear();
        }
        checks.insert(check.clone(), configs.clone());
        Ok(configs)
    }

    /// The config of a rung for one connection, from `configs` (the config's own or a
    /// check's). Its verifier also hands the certificate the server presented to
    /// [`take_seen_certificate`] (a rejected certificate is the one a report most
    /// needs to show); the session collects it after each step.
    pub fn connection_config(configs: &RungConfigs, rung: Rung, sni: bool) -> Arc<ClientConfig> {
        take_seen_certificate();
        configs[rung as usize * 2 + usize::from(!sni)].clone()
    }

    /// Whether the handshake itself enforces chain and name.
    pub fn enforces(&self) -> bool {
        self.enforce
    }

    /// Checks a received chain against the trust anchors and the name, without
    /// failing the connection: the verdict goes into the report. `None` when no
    /// trust anchors are loaded.
    pub fn check_chain(&self, chain: &[CertificateDer<'static>], name: &ServerName<'_>) -> Option<Result<()>> {
        let w = self.webpki.as_ref()?;
        let (ee, rest) = chain.split_first()?;
        Some(
            w.verify_server_cert(ee, rest, name, &[], UnixTime::now())
                .map(|_| ())
                .map_err(|e| crate::tls::map_error(&e, "certificate check")),
        )
    }
}

/// Builds the config of every rung, with and without SNI, around one verifier: rustls
/// resumes a session only with the very verifier (the same Arc) that accepted it.
fn build_rungs(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    cache: &Arc<rustls::client::ClientSessionMemoryCache>,
) -> Result<RungConfigs> {
    let recorder: Arc<dyn ServerCertVerifier> = Arc::new(Recorder { inner: verifier });
    let mut rungs = Vec::new();
    for rung in Rung::ALL {
        for sni in [true, false] {
            let rung_provider = Arc::new(CryptoProvider { kx_groups: rung.kx_groups(), ..(**provider).clone() });
            let mut cfg = ClientConfig::builder_with_provider(rung_provider)
                .with_protocol_versions(rung.versions())
                .map_err(|e| Error::new(Code::TlsConfig, e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth();
            cfg.resumption = rustls::client::Resumption::store(cache.clone());
            cfg.enable_sni = sni;
            rung.adjust(&mut cfg);
            rungs.push(Arc::new(cfg));
        }
    }
    Ok(rungs)
}

/// The trust anchors' chain check for names of our choosing rather than the name
/// the connection was opened for (MTA-STS: the MX host, whatever SNI says).
#[derive(Debug)]
struct NamedWebPki {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<String>,
}

impl ServerCertVerifier for NamedWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no name to check the certificate against".into());
        for name in &self.names {
            let Ok(sn) = ServerName::try_from(name.clone()) else { continue };
            match self.inner.verify_server_cert(end_entity, intermediates, &sn, ocsp_response, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A verifier for the policies that record the certificate but do not enforce it
/// (RFC 7672 section 8.1 calls this opportunistic TLS): any chain is accepted, the
/// handshake signatures are still verified so the key exchange is authentic to the
/// presented key.
#[derive(Debug)]
pub(crate) struct RecordOnly {
    provider: Arc<CryptoProvider>,
}

impl RecordOnly {
    /// The handshake signature checks with the provider's algorithms; verifiers of
    /// other policies (DANE) delegate theirs here.
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        RecordOnly { provider }
    }
}

impl ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Wraps the policy's verifier and keeps the end-entity certificate it was shown.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn ServerCertVerifier>,
}

thread_local! {
    /// The end-entity certificate the verifier saw last on this thread. rustls calls
    /// the verifier inside `process_new_packets`, on the thread driving that
    /// connection, and the session takes the certificate right after that call, so
    /// sessions sharing a thread (an event loop) never see each other's.
    static SEEN: std::cell::RefCell<Option<CertificateDer<'static>>> = const { std::cell::RefCell::new(None) };
}

/// The certificate the verifier saw on this thread since the last call, if any.
pub fn take_seen_certificate() -> Option<CertificateDer<'static>> {
    SEEN.with(|s| s.borrow_mut().take())
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        SEEN.with(|s| *s.borrow_mut() = Some(end_entity.clone().into_owned()));
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
