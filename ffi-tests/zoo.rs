//! The recovery zoo: an SMTP server on loopback that speaks the STARTTLS preamble
//! correctly and then misbehaves at the byte level, as TLS-intolerant servers and
//! middleboxes do. A fixture for the tests, never part of the library.
//!
//!     mailtls-zoo MODE [--listen 127.0.0.1:0] [--tls12-only]
//!
//! Prints `{"listening":"127.0.0.1:PORT"}`, then one JSON line per connection:
//! `{"conn":N,"hello_len":L,"tls13":b,"pq":b,"sni":b,"action":"...","result":"..."}`.
//!
//! Modes: normal, reset-above:N, eof-above:N, hang-above:N, alert-above:N:DESC,
//! reset-tls13, alert-tls13:DESC, reset-pq, alert-pq:DESC, unrecognized-name,
//! tls12-only, filter-tls13 (resets hellos offering TLS 1.3 in front of a TLS
//! 1.3-capable server), tls11 (answers with a TLS 1.1 ServerHello), cbc-only
//! (handshake_failure to every hello), flaky:N (resets connections 1, N+1, 2N+1...),
//! no-starttls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default, Debug)]
struct Hello {
    len: usize,
    tls13: bool,
    pq: bool,
    sni: bool,
}

fn parse_hello(rec: &[u8]) -> Hello {
    let mut h = Hello { len: rec.len(), ..Hello::default() };
    let b = rec.get(5..).unwrap_or(&[]);
    // handshake header (4) + version (2) + random (32)
    let mut p = 4 + 2 + 32;
    let take = |p: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*p..*p + n)?;
        *p += n;
        Some(s)
    };
    let Some(sid) = take(&mut p, 1) else { return h };
    let sid = sid[0] as usize;
    if take(&mut p, sid).is_none() {
        return h;
    }
    let Some(cs) = take(&mut p, 2) else { return h };
    let cs = u16::from_be_bytes([cs[0], cs[1]]) as usize;
    if take(&mut p, cs).is_none() {
        return h;
    }
    let Some(cm) = take(&mut p, 1) else { return h };
    let cm = cm[0] as usize;
    if take(&mut p, cm).is_none() {
        return h;
    }
    let Some(el) = take(&mut p, 2) else { return h };
    let end = p + u16::from_be_bytes([el[0], el[1]]) as usize;
    while p + 4 <= end.min(b.len()) {
        let t = u16::from_be_bytes([b[p], b[p + 1]]);
        let l = u16::from_be_bytes([b[p + 2], b[p + 3]]) as usize;
        let data = b.get(p + 4..p + 4 + l).unwrap_or(&[]);
        p += 4 + l;
        match t {
            0x0000 => h.sni = true,
            0x002b => h.tls13 |= data.get(1..).unwrap_or(&[]).chunks(2).any(|v| v == [0x03, 0x04]),
            0x000a => h.pq |= data.get(2..).unwrap_or(&[]).chunks(2).any(|g| g == [0x11, 0xec]),
            _ => {}
        }
    }
    h
}

/// Reads a CRLF line.
fn line(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            _ => return None,
        }
        if out.len() > 2000 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&out).trim_end().to_string())
}

/// Peeks at the full first record without consuming it (so a close can reset).
fn peek_record(s: &TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 5 + 65536];
    for _ in 0..500 {
        let n = s.peek(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        if n >= 5 {
            let need = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
            if n >= need {
                buf.truncate(need);
                return Some(buf);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn alert(desc: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, desc]
}

fn reset(s: TcpStream) {
    // Unread data in the receive queue makes close() send RST (RFC 2525 2.17).
    drop(s);
}

fn smtp_preamble(s: &mut TcpStream, offer: bool) -> bool {
    if s.write_all(b"220 zoo ESMTP\r\n").is_err() {
        return false;
    }
    loop {
        let Some(l) = line(s) else { return false };
        let verb = l.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "LHLO" if offer => b"250-zoo\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            "EHLO" | "LHLO" => b"250-zoo\r\n250 PIPELINING\r\n",
            "STARTTLS" if offer => {
                let _ = s.write_all(b"220 2.0.0 go ahead\r\n");
                return true;
            }
            "QUIT" => {
                let _ = s.write_all(b"221 bye\r\n");
                return false;
            }
            _ => b"250 ok\r\n",
        };
        if s.write_all(reply).is_err() {
            return false;
        }
    }
}

fn serve_tls(mut s: TcpStream, cfg: Arc<rustls::ServerConfig>) -> &'static str {
    let Ok(mut conn) = rustls::ServerConnection::new(cfg) else { return "config" };
    let mut tls = rustls::Stream::new(&mut conn, &mut s);
    let mut inbuf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        while let Some(i) = inbuf.iter().position(|&c| c == b'\n') {
            let l: Vec<u8> = inbuf.drain(..=i).collect();
            let verb = String::from_utf8_lossy(&l).split(' ').next().unwrap_or("").trim().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "LHLO" => b"250-zoo\r\n250 AUTH PLAIN\r\n",
                "QUIT" => {
                    let _ = tls.write_all(b"221 bye\r\n");
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return "ok";
                }
                _ => b"250 ok\r\n",
            };
            if tls.write_all(reply).is_err() {
                return "write-failed";
            }
        }
        match tls.read(&mut b) {
            Ok(0) => return "closed",
            Ok(n) => inbuf.extend_from_slice(&b[..n]),
            Err(_) => return "tls-failed",
        }
    }
}

fn tls11_server_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x2f, 0x00, 0x00, 0x00]);
    let mut hs = vec![2u8, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x02, 0x00, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "normal".into());
    let mut listen = "127.0.0.1:0".to_string();
    let mut i = 2;
    while i < args.len() {
        if args[i] == "--listen" {
            listen = args.get(i + 1).cloned().unwrap_or(listen);
            i += 1;
        }
        i += 1;
    }
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).expect("certificate");
    let ck = mailtls::tls::server::certified_key(cert.as_bytes(), key.as_bytes()).expect("key");
    let tickets = Arc::new(mailtls::tls::tickets::Tickets::new().expect("ticket secret"));
    let full = mailtls::tls::server::server_config(ck.clone(), tickets).expect("config");
    let tls12 = {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        #[derive(Debug)]
        struct One(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for One {
            fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS12])
                .expect("versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(One(ck))),
        )
    };
    let l = TcpListener::bind(&listen).expect("bind");
    println!("{{\"listening\":\"{}\"}}", l.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    let count = Arc::new(AtomicUsize::new(0));
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = mode.clone();
        let (full, tls12) = (full.clone(), tls12.clone());
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            // No Nagle: after the client's Finished, rustls writes the session tickets
            // and then, in a second write, the reply to EHLO; with Nagle that reply
            // waits for the client's delayed ACK (40 ms on Linux), which would make
            // every session here cost 40 ms of idle time and hide what the benchmarks
            // measure. The misbehaviour this server plays is in the bytes, not in TCP.
            let _ = s.set_nodelay(true);
            let offer = mode != "no-starttls";
            if !smtp_preamble(&mut s, offer) {
                println!("{{\"conn\":{n},\"hello_len\":0,\"action\":\"plaintext\",\"result\":\"done\"}}");
                let _ = std::io::stdout().flush();
                return;
            }
            let Some(rec) = peek_record(&s) else {
                println!("{{\"conn\":{n},\"hello_len\":0,\"action\":\"none\",\"result\":\"no-hello\"}}");
                return;
            };
            let h = parse_hello(&rec);
            let arg = |k: usize| mode.split(':').nth(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            let kind = mode.split(':').next().unwrap_or("");
            let big = h.len > arg(1);
            let action = match kind {
                "reset-above" if big => "reset",
                "eof-above" if big => "eof",
                "hang-above" if big => "hang",
                "alert-above" if big => "alert",
                "reset-tls13" if h.tls13 => "reset",
                "alert-tls13" if h.tls13 => "alert",
                "reset-pq" if h.pq => "reset",
                "alert-pq" if h.pq => "alert",
                "unrecognized-name" if h.sni => "alert-112",
                "filter-tls13" if h.tls13 => "reset",
                "tls11" => "tls11",
                "cbc-only" => "alert-40",
                "flaky" if (n - 1).is_multiple_of(arg(1).max(1)) => "reset",
                // A genuinely TLS 1.3-intolerant server only speaks TLS 1.2 behind its bug,
                // and so does one that answers protocol_version to a large hello.
                "tls12-only" | "reset-tls13" | "alert-tls13" => "serve-tls12",
                "alert-above" if arg(2) == 70 => "serve-tls12",
                _ => "serve",
            };
            let desc = match kind {
                "alert-above" => arg(2) as u8,
                "alert-tls13" | "alert-pq" => arg(1) as u8,
                _ => 40,
            };
            let result = match action {
                "reset" => {
                    reset(s);
                    "reset"
                }
                "eof" => {
                    let mut b = vec![0u8; rec.len()];
                    let _ = s.read_exact(&mut b);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    "eof"
                }
                "hang" => {
                    let mut b = vec![0u8; rec.len()];
                    let _ = s.read_exact(&mut b);
                    let _ = s.read(&mut b); // until the client gives up or 20 s pass
                    "hung"
                }
                "alert" | "alert-112" | "alert-40" => {
                    let d = if action == "alert-112" { 112 } else if action == "alert-40" { 40 } else { desc };
                    let mut b = vec![0u8; rec.len()];
                    let _ = s.read_exact(&mut b);
                    let _ = s.write_all(&alert(d));
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let _ = s.read(&mut b);
                    "alerted"
                }
                "tls11" => {
                    let mut b = vec![0u8; rec.len()];
                    let _ = s.read_exact(&mut b);
                    let _ = s.write_all(&tls11_server_hello());
                    let _ = s.read(&mut b);
                    "tls11"
                }
                "serve-tls12" => serve_tls(s, tls12),
                _ => serve_tls(s, full),
            };
            println!(
                "{{\"conn\":{n},\"hello_len\":{},\"tls13\":{},\"pq\":{},\"sni\":{},\"action\":\"{action}\",\"result\":\"{result}\"}}",
                h.len, h.tls13, h.pq, h.sni
            );
            let _ = std::io::stdout().flush();
        });
    }
}
