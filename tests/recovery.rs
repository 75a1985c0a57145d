//! The ladder and the memory against the zoo's misbehaving servers, over loopback TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailtls::config::{ConfigBuilder, Policy, Role};
use mailtls::error::Code;
use mailtls::protocol::Proto;
use mailtls::recovery::memory::{Key, Memory};
use mailtls::recovery::{FailureClass, Rung};
use mailtls::session::report::{Outcome, Report};
use mailtls::session::{Connector, Session, Transport};

struct Zoo {
    child: Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Zoo {
    fn start(mode: &str) -> Zoo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailtls-zoo")).arg(mode).stdout(Stdio::piped()).spawn().expect("zoo");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first.trim().trim_end_matches("\"}").rsplit(':').next().unwrap().parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Zoo { child, port, lines: rx }
    }

    /// The connection lines logged so far (waits a little for stragglers).
    fn log(&self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300)) {
            v.push(l);
        }
        v
    }
}

impl Drop for Zoo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking socket that honours the session's step deadline, as the fd mode does.
struct Tcp(TcpStream, Option<std::time::Instant>);

impl Transport for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.1.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left == Some(Duration::ZERO) {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.0.set_read_timeout(left)?;
        self.0.read(buf).map_err(|e| if e.kind() == std::io::ErrorKind::WouldBlock { std::io::ErrorKind::TimedOut.into() } else { e })
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn set_deadline(&mut self, d: Option<std::time::Instant>) {
        self.1 = d;
    }
}

struct Dial {
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Connector for Dial {
    fn connect(&mut self, host: &str, port: u16) -> std::io::Result<Box<dyn Transport>> {
        self.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(Tcp(TcpStream::connect((host, port))?, None)))
    }
    fn close(&mut self) {}
}

struct Contact {
    result: Result<(), Code>,
    report: Report,
    connections: usize,
}

fn contact(zoo: &Zoo, policy: Policy, memory: &Arc<Memory>, hello_timeout: Duration) -> Contact {
    let mut b = ConfigBuilder::new(Role::Client);
    b.policy(policy).helo_name("client.test").step_timeout(Duration::from_secs(10)).hello_timeout(hello_timeout);
    b.memory(Some(memory.clone()));
    let cfg = b.build().unwrap();
    let mut s = Session::client(cfg, Proto::Smtp, "127.0.0.1", zoo.port).unwrap();
    s.set_server_name("localhost").unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut dial = Dial { connections: count.clone() };
    let first = dial.connect("127.0.0.1", zoo.port).unwrap();
    s.set_transport(first);
    s.set_connector(Box::new(dial));
    let result = s.negotiate().map_err(|e| e.code);
    if result.is_ok() {
        let _ = s.write(b"QUIT\r\n");
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
    }
    Contact { result, report: s.report().clone(), connections: count.load(std::sync::atomic::Ordering::SeqCst) }
}

fn last_rung(r: &Report) -> Option<Rung> {
    r.attempts.last().and_then(|a| a.rung)
}

fn key(zoo: &Zoo) -> Key {
    Key::new(Proto::Smtp, "127.0.0.1", zoo.port)
}

const T: Duration = Duration::from_secs(10);

#[test]
fn tolerant_server_takes_one_connection_at_the_top_rung() {
    let zoo = Zoo::start("normal");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()));
    assert_eq!((c.connections, last_rung(&c.report)), (1, Some(Rung::Modern)));
    assert!(m.get(&key(&zoo)).pinned.is_some());
}

#[test]
fn size_intolerance_reset_recovers_at_compact_and_is_remembered() {
    let zoo = Zoo::start("reset-above:1000");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!((c.connections, last_rung(&c.report)), (2, Some(Rung::Compact)));
    assert_eq!(c.report.attempts[0].class, FailureClass::Intolerance);
    let rec = m.get(&key(&zoo));
    assert_eq!(rec.intolerant.map(|i| i.rung), Some(Rung::Modern));
    let c2 = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c2.result, Ok(()));
    assert_eq!((c2.connections, last_rung(&c2.report)), (1, Some(Rung::Compact)));
    let log = zoo.log();
    assert_eq!(log.len(), 3, "{log:?}");
}

#[test]
fn hang_on_a_large_hello_times_out_once_then_compact() {
    let zoo = Zoo::start("hang-above:1000");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, Duration::from_millis(800));
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!(c.report.attempts[0].class, FailureClass::Timeout);
    assert_eq!((c.connections, last_rung(&c.report)), (2, Some(Rung::Compact)));
}

#[test]
fn tls13_intolerance_jumps_to_tls12_without_a_false_sentinel() {
    let zoo = Zoo::start("alert-tls13:70");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!((c.connections, last_rung(&c.report)), (2, Some(Rung::Tls12)));
    assert_eq!(c.report.tls_version.as_deref(), Some("TLSv1.2"));
}

#[test]
fn filter_in_front_of_a_tls13_server_is_a_downgrade_not_a_fallback() {
    let zoo = Zoo::start("filter-tls13");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::May, &m, T);
    assert_eq!(c.result, Err(Code::DowngradeDetected), "{:?}", c.report);
    assert_eq!(c.report.outcome(), Outcome::Defer);
    assert_eq!(last_rung(&c.report), Some(Rung::Tls12));
    let rec = m.get(&key(&zoo));
    assert!(rec.tls13.is_some());
    assert!(rec.intolerant.is_none());
}

#[test]
fn pq_intolerance_lands_on_classic() {
    let zoo = Zoo::start("reset-pq");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!((c.connections, last_rung(&c.report)), (3, Some(Rung::Classic)));
    let c2 = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!((c2.connections, last_rung(&c2.report)), (1, Some(Rung::Classic)));
}

#[test]
fn unrecognized_name_turns_sni_off_and_remembers() {
    let zoo = Zoo::start("unrecognized-name");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!((c.connections, last_rung(&c.report)), (2, Some(Rung::Modern)));
    let c2 = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c2.connections, 1);
}

#[test]
fn tls11_server_is_incompatible_plaintext_under_may_defer_under_encrypt() {
    let zoo = Zoo::start("tls11");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::May, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!(c.report.outcome(), Outcome::Plaintext);
    assert_eq!(c.report.attempts[0].class, FailureClass::Incompatible);
    assert_eq!(c.connections, 2);
    let c2 = contact(&zoo, Policy::May, &m, T);
    assert_eq!((c2.connections, c2.report.outcome()), (1, Outcome::Plaintext));
    let m2 = Arc::new(Memory::in_process());
    let c3 = contact(&zoo, Policy::Encrypt, &m2, T);
    assert_eq!(c3.report.outcome(), Outcome::Defer);
    assert_eq!(c3.connections, 1);
}

#[test]
fn cbc_only_server_exhausts_the_ladder_without_poisoning_memory() {
    let zoo = Zoo::start("cbc-only");
    let m = Arc::new(Memory::in_process());
    let c = contact(&zoo, Policy::May, &m, T);
    assert_eq!(c.result, Ok(()), "{:?}", c.report);
    assert_eq!(c.report.outcome(), Outcome::Plaintext);
    assert_eq!(c.report.reason, Some(Code::LadderExhausted));
    assert_eq!(c.connections, 4);
    let rec = m.get(&key(&zoo));
    assert_eq!(rec.intolerant.map(|i| i.class), Some(FailureClass::Incompatible));
}

#[test]
fn fresh_tolerance_blocks_fallback() {
    let zoo = Zoo::start("reset-above:1000");
    let m = Arc::new(Memory::in_process());
    m.record_success(&key(&zoo), Rung::Modern, true, true, true);
    let c = contact(&zoo, Policy::May, &m, T);
    assert_eq!(c.result, Err(Code::DowngradeSuspected));
    assert_eq!((c.connections, c.report.outcome()), (1, Outcome::Defer));
}

#[test]
fn pinned_peer_without_starttls_is_a_stripping_suspect() {
    let zoo = Zoo::start("no-starttls");
    let m = Arc::new(Memory::in_process());
    m.record_success(&key(&zoo), Rung::Modern, true, true, true);
    let c = contact(&zoo, Policy::May, &m, T);
    assert_eq!(c.result, Err(Code::StrippingSuspected));
    assert_eq!(c.report.outcome(), Outcome::Defer);
}

#[test]
fn reprobe_after_a_day_then_back_to_the_working_rung() {
    let zoo = Zoo::start("reset-above:1000");
    let m = Arc::new(Memory::in_process());
    m.set_clock(2_000_000_000);
    assert_eq!(contact(&zoo, Policy::Encrypt, &m, T).connections, 2);
    m.set_clock(2_000_000_000 + 3600);
    assert_eq!(contact(&zoo, Policy::Encrypt, &m, T).connections, 1);
    m.set_clock(2_000_000_000 + 86400 + 10);
    let c = contact(&zoo, Policy::Encrypt, &m, T);
    assert_eq!(c.result, Ok(()));
    assert_eq!((c.connections, c.report.attempts[0].rung), (2, Some(Rung::Modern)));
    m.set_clock(2_000_000_000 + 86400 + 20);
    assert_eq!(contact(&zoo, Policy::Encrypt, &m, T).connections, 1);
}
