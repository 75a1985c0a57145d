//! The Rust half of `make bench` (issue 7): bare rustls running the same SMTP dialogue
//! with no STARTTLS layer (what mailtls must come close to), the crypto floor of one
//! session (the public-key operations it cannot avoid), and the intolerance memory.
//!
//!     mailtls-bench CERT KEY LABEL [--quick]
//!
//! Prints one JSON object per figure, like bench/bench.c.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use aws_lc_rs::{agreement, kem, rand::SystemRandom, signature};
use mailtls::protocol::Proto;
use mailtls::recovery::memory::{Key, Memory};
use mailtls::recovery::Rung;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection, SignatureScheme};

/// Counts the heap in use, for bytes per memory entry.
struct Counting;
static IN_USE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        IN_USE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn emit(what: &str, imp: &str, label: &str, unit: &str, runs: &[f64]) {
    let mut s = runs.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    let med = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    let list: Vec<String> = runs.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "{{\"what\":\"{what}\",\"impl\":\"{imp}\",\"cert\":\"{label}\",\"unit\":\"{unit}\",\"runs\":[{}],\"median\":{med:.1}}}",
        list.join(",")
    );
}

// ---- bare rustls: the same SMTP dialogue, written by hand ----

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);
impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads until the data ends in CRLF and its last line is a final SMTP reply line.
fn read_reply(r: &mut impl Read) {
    let mut buf = Vec::with_capacity(512);
    let mut b = [0u8; 4096];
    loop {
        let n = r.read(&mut b).expect("read");
        assert!(n > 0, "eof");
        buf.extend_from_slice(&b[..n]);
        if buf.ends_with(b"\r\n") {
            let body = &buf[..buf.len() - 2];
            let last = body.rsplit(|&c| c == b'\n').next().unwrap_or(body);
            if last.len() < 4 || last[3] == b' ' {
                return;
            }
        }
    }
}

/// Reads one command line (the client never pipelines here).
fn read_line(r: &mut impl Read) {
    let mut buf = Vec::with_capacity(64);
    let mut b = [0u8; 512];
    while !buf.ends_with(b"\r\n") {
        let n = r.read(&mut b).expect("read");
        assert!(n > 0, "eof");
        buf.extend_from_slice(&b[..n]);
    }
}

fn serve_bare(cfg: Arc<ServerConfig>, mut s: UnixStream, bulk: usize) {
    s.write_all(b"220 bench.test ESMTP\r\n").unwrap();
    read_line(&mut s);
    s.write_all(b"250-bench.test\r\n250 STARTTLS\r\n").unwrap();
    read_line(&mut s);
    s.write_all(b"220 go ahead\r\n").unwrap();
    let conn = ServerConnection::new(cfg).unwrap();
    let mut t = rustls::StreamOwned::new(conn, s);
    read_line(&mut t);
    t.write_all(b"250-bench.test\r\n250 8BITMIME\r\n").unwrap();
    if bulk > 0 {
        // the body, then "QUIT\r\n", possibly in the same read
        let mut left = bulk + 6;
        let mut b = vec![0u8; 65536];
        while left > 0 {
            let n = t.read(&mut b).unwrap();
            assert!(n > 0);
            left = left.saturating_sub(n);
        }
    } else {
        read_line(&mut t);
    }
    t.write_all(b"221 bye\r\n").unwrap();
    t.conn.send_close_notify();
    let _ = t.flush();
}

/// Returns whether the session resumed and the seconds from the first body byte
/// written to the server's reply after the last (the bulk figure; no handshake in it).
fn client_bare(cfg: Arc<ClientConfig>, name: &str, mut s: UnixStream, bulk: usize) -> (bool, f64) {
    read_reply(&mut s);
    s.write_all(b"EHLO client.test\r\n").unwrap();
    read_reply(&mut s);
    s.write_all(b"STARTTLS\r\n").unwrap();
    read_reply(&mut s);
    let conn = ClientConnection::new(cfg, ServerName::try_from(name.to_string()).unwrap()).unwrap();
    let mut t = rustls::StreamOwned::new(conn, s);
    t.write_all(b"EHLO client.test\r\n").unwrap();
    read_reply(&mut t);
    let resumed = t.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let chunk = [0u8; 16384];
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < bulk {
        t.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    t.write_all(b"QUIT\r\n").unwrap();
    read_reply(&mut t);
    let secs = t0.elapsed().as_secs_f64();
    t.conn.send_close_notify();
    let _ = t.flush();
    (resumed, secs)
}

struct Bare {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn bare_configs(cert: &str, key: &str, x25519: bool, resume: bool) -> Bare {
    let mut p = provider::default_provider();
    if x25519 {
        p.kx_groups = vec![provider::kx_group::X25519];
    }
    let p = Arc::new(p);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut server = ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    server.ticketer = provider::Ticketer::new().unwrap();
    let mut client = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
        .with_no_client_auth();
    if !resume {
        client.resumption = rustls::client::Resumption::disabled();
    }
    Bare { client: Arc::new(client), server: Arc::new(server) }
}

/// Sessions per second (and how many resumed) over `secs`, server in a second thread.
fn bare_sessions(b: &Bare, secs: f64, bulk: usize) -> (f64, usize, usize) {
    let (tx, rx) = mpsc::channel::<Option<UnixStream>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let scfg = b.server.clone();
    let h = thread::spawn(move || {
        while let Ok(Some(s)) = rx.recv() {
            serve_bare(scfg.clone(), s, bulk);
            done_tx.send(()).unwrap();
        }
    });
    let one = |tx: &mpsc::Sender<Option<UnixStream>>| {
        let (a, s) = UnixStream::pair().unwrap();
        tx.send(Some(s)).unwrap();
        let (r, _) = client_bare(b.client.clone(), "bench.test", a, bulk);
        done_rx.recv().unwrap();
        r
    };
    one(&tx); // warm-up, and the first ticket
    let t0 = Instant::now();
    let (mut n, mut resumed) = (0usize, 0usize);
    loop {
        resumed += usize::from(one(&tx));
        n += 1;
        if t0.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    tx.send(None).unwrap();
    h.join().unwrap();
    (n as f64 / el, resumed, n)
}

// ---- the crypto floor ----

fn per_op(iters: u32, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    t0.elapsed().as_secs_f64() / f64::from(iters)
}

/// Seconds of public-key work in one full session: both key shares and agreements
/// (and the ML-KEM-768 half of the hybrid with `pq`), the server's signature and the
/// client's verification of it.
fn crypto_floor(key_pem: &str, pq: bool, iters: u32) -> f64 {
    let rng = SystemRandom::new();
    let x25519 = per_op(iters, || {
        let a = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
        let pa = a.compute_public_key().unwrap();
        let b = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
        let pb = b.compute_public_key().unwrap();
        agreement::agree_ephemeral(a, agreement::UnparsedPublicKey::new(&agreement::X25519, pb.as_ref()), (), |_| Ok(()))
            .unwrap();
        agreement::agree_ephemeral(b, agreement::UnparsedPublicKey::new(&agreement::X25519, pa.as_ref()), (), |_| Ok(()))
            .unwrap();
    });
    let mlkem = if pq {
        per_op(iters, || {
            let dk = kem::DecapsulationKey::generate(&kem::ML_KEM_768).unwrap();
            let ek = dk.encapsulation_key().unwrap();
            let (ct, _ss) = ek.encapsulate().unwrap();
            dk.decapsulate(ct).unwrap();
        })
    } else {
        0.0
    };
    let der = match PrivateKeyDer::from_pem_file(key_pem).unwrap() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => panic!("the bench key must be PKCS#8"),
    };
    let msg = [7u8; 130]; // a TLS 1.3 CertificateVerify input is 130 bytes with SHA-256
    let sig_verify = if let Ok(kp) = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der) {
        use signature::KeyPair;
        let public = kp.public_key().as_ref().to_vec();
        let sig = kp.sign(&rng, &msg).unwrap();
        per_op(iters, || {
            kp.sign(&rng, &msg).unwrap();
        }) + per_op(iters, || {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public).verify(&msg, sig.as_ref()).unwrap();
        })
    } else {
        use signature::KeyPair;
        let kp = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        let public = kp.public_key().as_ref().to_vec();
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(&signature::RSA_PSS_SHA256, &rng, &msg, &mut sig).unwrap();
        per_op(iters, || {
            let mut s = vec![0u8; kp.public_modulus_len()];
            kp.sign(&signature::RSA_PSS_SHA256, &rng, &msg, &mut s).unwrap();
        }) + per_op(iters, || {
            signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &public).verify(&msg, &sig).unwrap();
        })
    };
    x25519 + mlkem + sig_verify
}

// ---- the intolerance memory ----

fn keys(n: usize) -> Vec<Key> {
    (0..n).map(|i| Key::new(Proto::Smtp, &format!("mx{i}.example{}.org", i % 997), 25)).collect()
}

fn memory_figures(quick: bool) {
    let n = if quick { 10_000 } else { 1_000_000 };
    let ks = keys(n);
    let before = IN_USE.load(Ordering::Relaxed);
    let m = Arc::new(Memory::in_process());
    let t0 = Instant::now();
    for k in &ks {
        m.record_success(k, Rung::Compact, true, false, true);
    }
    let updates = n as f64 / t0.elapsed().as_secs_f64();
    let per_entry = (IN_USE.load(Ordering::Relaxed) - before) as f64 / n as f64;
    emit("memory-updates", "mailtls", "-", "updates/s", &[updates]);
    emit("memory-bytes", "mailtls", "-", "bytes/entry", &[per_entry]);
    emit("memory-entries", "mailtls", "-", "entries", &[n as f64]);
    let ks = Arc::new(ks);
    for threads in [1usize, 2] {
        let dur = Duration::from_millis(if quick { 100 } else { 1000 });
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (m, ks) = (m.clone(), ks.clone());
                thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut i = t * 7919;
                    let mut done = 0u64;
                    while t0.elapsed() < dur {
                        for _ in 0..1000 {
                            i = (i + 104_729) % ks.len();
                            std::hint::black_box(m.get(&ks[i]));
                        }
                        done += 1000;
                    }
                    done as f64 / t0.elapsed().as_secs_f64()
                })
            })
            .collect();
        let total: f64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        emit(&format!("memory-lookups-{threads}t"), "mailtls", "-", "lookups/s", &[total]);
    }
    // The same map, lookups among 10,000 of its peers only (a mail server's hot
    // destinations): what the table costs when the cache holds its working set.
    let hot = ks.len().min(10_000);
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut i = 0usize;
    while t0.elapsed() < Duration::from_millis(if quick { 100 } else { 1000 }) {
        for _ in 0..1000 {
            i = (i + 7919) % hot;
            std::hint::black_box(m.get(&ks[i]));
        }
        done += 1000;
    }
    emit("memory-lookups-hot", "mailtls", "-", "lookups/s", &[done as f64 / t0.elapsed().as_secs_f64()]);
    // The persistent memory (the database against the text file, in fresh processes,
    // at fleet scale) is measured by bench/fleet.rs.
}

// ---- recovery cost: bare rustls against the zoo's tolerant server ----

/// A TCP stream that counts the times the client wrote and then waited for the server.
struct Counted {
    s: std::net::TcpStream,
    flights: usize,
    wrote: bool,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.wrote {
            self.flights += 1;
            self.wrote = false;
        }
        self.s.read(buf)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.s.write(buf)?;
        self.wrote |= n > 0;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// Round trips of one STARTTLS contact by bare rustls (TCP handshake included), the
/// same dialogue as bench.c's: greeting, EHLO, STARTTLS, handshake, EHLO, QUIT.
fn recovery_bare(label: &str) {
    let Ok(zoo) = std::env::var("MAILTLS_ZOO") else {
        eprintln!("mailtls-bench: MAILTLS_ZOO not set, no recovery-cost figure");
        return;
    };
    let mut child = std::process::Command::new(zoo)
        .arg("normal")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mailtls-zoo");
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).to_string();
    let port: u16 = line.rsplit(':').next().unwrap().trim_end_matches(['"', '}']).parse().expect("the zoo's port");
    let p = Arc::new(provider::default_provider());
    let cfg = Arc::new(
        ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
            .with_no_client_auth(),
    );
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut c = Counted { s, flights: 0, wrote: false };
    read_reply(&mut c);
    c.write_all(b"EHLO client.test\r\n").unwrap();
    read_reply(&mut c);
    c.write_all(b"STARTTLS\r\n").unwrap();
    read_reply(&mut c);
    let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut t = rustls::StreamOwned::new(conn, c);
    t.write_all(b"EHLO client.test\r\n").unwrap();
    read_reply(&mut t);
    t.write_all(b"QUIT\r\n").unwrap();
    read_reply(&mut t);
    emit("recovery-tolerant-connections", "rustls", label, "connections", &[1.0]);
    emit("recovery-tolerant-round-trips", "rustls", label, "round trips", &[1.0 + t.sock.flights as f64]);
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: mailtls-bench CERT KEY LABEL [--quick]");
        std::process::exit(2);
    }
    let (cert, key, label) = (&args[1], &args[2], &args[3]);
    let quick = args.get(4).is_some_and(|a| a == "--quick");
    let runs = if quick { 1 } else { 5 };
    let secs = if quick { 0.2 } else { 1.0 };
    // BENCH_PART=sessions: the handshake figures only (run.sh pins them to one CPU);
    // BENCH_PART=rest: everything else. Unset: all.
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    let (sessions, rest) = (part != "rest", part != "sessions");
    for (name, x25519) in [("rustls-pq", false), ("rustls-x25519", true)] {
        if !sessions {
            break;
        }
        for resume in [false, true] {
            let b = bare_configs(cert, key, x25519, resume);
            let mut v = Vec::new();
            let (mut resumed, mut total) = (0, 0);
            for _ in 0..runs {
                let (r, re, n) = bare_sessions(&b, secs, 0);
                v.push(r);
                resumed = re;
                total = n;
            }
            eprintln!("mailtls-bench: {name}: {resumed} of {total} sessions resumed");
            emit(if resume { "resumed" } else { "sessions" }, name, label, "sessions/s", &v);
        }
        let iters = if quick { 20 } else { 2000 };
        let floor = crypto_floor(key, !x25519, iters);
        emit("floor", name, label, "sessions/s", &[1.0 / floor]);
    }
    if label == "ecdsa" && rest {
        let b = bare_configs(cert, key, false, false);
        let bulk = if quick { 1 << 20 } else { 64 << 20 };
        let mut v = Vec::new();
        for _ in 0..(if quick { 1 } else { 5 }) {
            let (tx, rx) = mpsc::channel();
            let scfg = b.server.clone();
            let (a, s) = UnixStream::pair().unwrap();
            let h = thread::spawn(move || {
                serve_bare(scfg, s, bulk);
                tx.send(()).unwrap();
            });
            let (_, secs) = client_bare(b.client.clone(), "bench.test", a, bulk);
            rx.recv().unwrap();
            h.join().unwrap();
            v.push(bulk as f64 / 1e6 / secs);
        }
        emit("bulk", "rustls", label, "MB/s", &v);
        memory_figures(quick);
        recovery_bare(label);
    }
}
