//! The memory at fleet scale (issue 15): the LMDB database (`Memory::file`) measured
//! against the version-1 text file it replaced (`Memory::text_file`), in the same run,
//! at the sizes a large MTA reaches: the store itself (one update, lookups, opening in
//! a fresh process), the cost of one delivery by a fresh process, and a fleet of
//! delivery processes sharing one database (throughput, and no record lost).
//!
//!     mailtls-fleet [--quick]                       every figure, JSON lines on stdout
//!     mailtls-fleet open KIND PATH                  one open and first lookup, in ms
//!     mailtls-fleet deliver KIND PATH PORT          one delivery (STARTTLS, QUIT)
//!     mailtls-fleet fleet-worker KIND PATH PORT W N N sessions of worker W
//!     mailtls-fleet fill KIND PATH N                a memory of N peers (for profiling)
//!     mailtls-fleet lookups KIND PATH N THREADS     lookups/s/thread on it, 3 s (ditto)
//!
//! KIND is `db`, `text` or `none` (no memory). The last three are this program
//! re-executed by the first: what a delivery process pays is a real exec, a cold
//! process that opens the memory once and exits, not a loop in a warm one.
//! MAILTLS_ZOO names the test SMTP server (`mailtls-zoo normal`); MAILTLS_CLIENT, if
//! set, the C `mailtls-client` for the cross-check row. Figures are printed, never
//! asserted, except that a lost record or a failed delivery fails the run: those
//! are correctness, not timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mailtls::config::{ConfigBuilder, Policy, Role};
use mailtls::protocol::Proto;
use mailtls::recovery::memory::{Key, Memory, Record, FILE_MAGIC};
use mailtls::recovery::Rung;
use mailtls::session::report::Outcome;
use mailtls::session::{Session, Transport};

/// One figure as a JSON line, the format of bench.rs and bench.c (`cert` is "-").
fn emit(what: &str, imp: &str, unit: &str, runs: &[f64]) {
    let list: Vec<String> = runs.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "{{\"what\":\"{what}\",\"impl\":\"{imp}\",\"cert\":\"-\",\"unit\":\"{unit}\",\"runs\":[{}],\"median\":{:.3}}}",
        list.join(","),
        median(runs)
    );
    let _ = std::io::stdout().flush();
}

/// A figure with many runs (update latencies): the runs shown are the minimum, the
/// 10th, 50th, 90th and 99th percentiles and the maximum; the median is of them all.
fn emit_spread(what: &str, imp: &str, unit: &str, all: &[f64]) {
    let mut s = all.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let shown: Vec<String> = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0].iter().map(|&q| format!("{:.3}", at(q))).collect();
    println!(
        "{{\"what\":\"{what}\",\"impl\":\"{imp}\",\"cert\":\"-\",\"unit\":\"{unit}\",\"count\":{},\"runs\":[{}],\"median\":{:.3}}}",
        all.len(),
        shown.join(","),
        median(all)
    );
    let _ = std::io::stdout().flush();
}

fn median(runs: &[f64]) -> f64 {
    let mut s = runs.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn say(msg: &str) {
    eprintln!("mailtls-fleet: {msg}");
}

/// Fails the run: a lost record or a failed delivery is a defect, whatever the speed.
fn fail(msg: &str) -> ! {
    eprintln!("mailtls-fleet: FAILED: {msg}");
    std::process::exit(1);
}

/// The pre-filled peers: the same names as bench.rs's in-process figures.
fn peer(i: usize) -> Key {
    Key::new(Proto::Smtp, &format!("mx{i}.example{}.org", i % 997), 25)
}

/// The peers a fleet worker delivers to: one new key per session.
fn fleet_host(w: usize, i: usize) -> String {
    format!("peer-{w}-{i}.test")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A version-1 text of `n` peers, each tolerant at `compact` and pinned now: what an
/// export holds and what the text backend reads. Nothing in it expires for 60 days,
/// so no sweep deletes a record while the fleet counts them.
fn v1_text(n: usize) -> String {
    let now = unix_now();
    let rec = Record { tolerant: Some((Rung::Compact, now)), pinned: Some(now), pq: Some(true), tls13: Some(now), ..Default::default() };
    let fields = rec.fields();
    let mut text = String::with_capacity(n * 110 + 32);
    text.push_str(FILE_MAGIC);
    text.push('\n');
    for i in 0..n {
        text.push_str(&peer(i).text());
        text.push(' ');
        text.push_str(&fields);
        text.push('\n');
    }
    text
}

/// Cheap reproducible randomness (xorshift64*) for the keys looked up and updated.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn open(kind: &str, path: &Path) -> Option<Arc<Memory>> {
    let m = match kind {
        "db" => Memory::file(path),
        "text" => Memory::text_file(path),
        "none" => return None,
        _ => fail(&format!("unknown memory kind {kind:?}")),
    };
    let m = m.unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    Some(Arc::new(m))
}

fn check_problems(m: &Memory, what: &str) {
    let p = m.problems();
    if !p.is_empty() {
        fail(&format!("{what}: the memory reports problems: {p:?}"));
    }
}

// ---- the child processes ----

/// A blocking socket that honours the session's step deadline, as tests/recovery.rs's.
struct Tcp(TcpStream, Option<Instant>);

impl Transport for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.1.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.0.set_read_timeout(left)?;
        self.0.read(buf).map_err(|e| if e.kind() == std::io::ErrorKind::WouldBlock { std::io::ErrorKind::TimedOut.into() } else { e })
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn set_deadline(&mut self, d: Option<Instant>) {
        self.1 = d;
    }
}

/// A client config as a delivery process builds it: policy encrypt (TLS required, the
/// zoo's self-signed certificate recorded, not enforced), the memory if any.
fn client_config(memory: Option<Arc<Memory>>) -> Arc<mailtls::config::Config> {
    let mut b = ConfigBuilder::new(Role::Client);
    b.policy(Policy::Encrypt).helo_name("fleet.test").step_timeout(Duration::from_secs(30));
    b.memory(memory);
    b.build().unwrap_or_else(|e| fail(&format!("config: {e}")))
}

/// One SMTP contact: greeting, EHLO, STARTTLS, handshake, EHLO, then QUIT and its 221.
/// The session plans from the memory and records the outcome in it by itself. `host`
/// is the memory key's host and the SNI; the zoo ignores SNI, and under encrypt the
/// name is checked against no certificate that counts, so a name per peer costs
/// nothing a real peer would not.
fn one_session(cfg: &Arc<mailtls::config::Config>, host: &str, port: u16, server_name: Option<&str>) -> Result<(), String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    let mut s = Session::client(cfg.clone(), Proto::Smtp, host, port).map_err(|e| e.to_string())?;
    if let Some(n) = server_name {
        s.set_server_name(n).map_err(|e| e.to_string())?;
    }
    s.set_transport(Box::new(Tcp(sock, None)));
    s.negotiate().map_err(|e| format!("negotiate: {e}"))?;
    if s.report().outcome != Some(Outcome::Tls) {
        return Err(format!("outcome {:?}, not TLS", s.report().outcome));
    }
    s.write(b"QUIT\r\n").map_err(|e| format!("QUIT: {e}"))?;
    let mut reply = Vec::new();
    let mut b = [0u8; 256];
    while !reply.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("reading the 221: {e}")),
        }
    }
    if !reply.starts_with(b"221") {
        return Err(format!("QUIT answered {:?}", String::from_utf8_lossy(&reply)));
    }
    let _ = s.close();
    Ok(())
}

/// `open KIND PATH`: the time to open the memory and look one peer up, what a fresh
/// delivery process pays before its first connection (ms on stdout).
fn child_open(kind: &str, path: &Path) {
    let t0 = Instant::now();
    let m = open(kind, path).unwrap_or_else(|| fail("open: kind none"));
    std::hint::black_box(m.plan(&peer(0)));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    check_problems(&m, "open");
    println!("{ms}");
}

/// `deliver KIND PATH PORT`: one delivery process: open the memory, one contact to the
/// zoo as 127.0.0.1 (the key `smtp 127.0.0.1 PORT`, SNI localhost), exit.
fn child_deliver(kind: &str, path: &Path, port: u16) {
    let m = open(kind, path);
    let cfg = client_config(m.clone());
    if let Err(e) = one_session(&cfg, "127.0.0.1", port, Some("localhost")) {
        fail(&format!("deliver: {e}"));
    }
    if let Some(m) = &m {
        check_problems(m, "deliver");
    }
}

/// `fleet-worker KIND PATH PORT W N`: opens the memory and builds its config, says
/// `ready`, waits for the go on stdin (so that every worker starts together and the
/// wall time holds no process start-up), then N sessions, each to a new peer
/// `peer-W-I.test`; says `done OK FAILED`.
fn child_fleet_worker(kind: &str, path: &Path, port: u16, w: usize, n: usize) {
    let m = open(kind, path);
    let cfg = client_config(m.clone());
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let (mut ok, mut failed) = (0usize, 0usize);
    for i in 0..n {
        match one_session(&cfg, &fleet_host(w, i), port, None) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    say(&format!("worker {w} session {i}: {e}"));
                }
            }
        }
    }
    if let Some(m) = &m {
        for p in m.problems() {
            say(&format!("worker {w}: memory problem: {p}"));
            failed += 1;
        }
    }
    println!("done {ok} {failed}");
    let _ = std::io::stdout().flush();
}

// ---- the parent: files, the store figures, deliveries, the fleet ----

struct Files {
    dir: PathBuf,
    /// Pristine memories by size, copied for each use (every use changes them).
    text: Vec<(usize, PathBuf)>,
    db: Vec<(usize, PathBuf)>,
}

impl Files {
    fn pristine(&self, kind: &str, n: usize) -> &Path {
        let list = if kind == "db" { &self.db } else { &self.text };
        &list.iter().find(|(m, _)| *m == n).expect("a pristine file of that size").1
    }

    /// A fresh copy of the pristine memory of `n` peers in a directory of its own (the
    /// database's lock files and the text file's temporaries sit beside it).
    fn copy(&self, kind: &str, n: usize, case: &str) -> PathBuf {
        let d = self.dir.join(case);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("memory");
        std::fs::copy(self.pristine(kind, n), &p).unwrap();
        p
    }
}

/// Writes the text files and builds the databases of every size: the text directly,
/// the database by `import_text` of the same text (one transaction).
fn fill(dir: &Path, sizes: &[usize]) -> Files {
    let mut f = Files { dir: dir.to_path_buf(), text: Vec::new(), db: Vec::new() };
    for &n in sizes {
        let text = v1_text(n);
        let tp = dir.join(format!("pristine-text-{n}"));
        std::fs::write(&tp, &text).unwrap();
        let dd = dir.join(format!("pristine-db-{n}"));
        std::fs::create_dir_all(&dd).unwrap();
        let dp = dd.join("memory");
        let t0 = Instant::now();
        {
            let m = Memory::file(&dp).unwrap_or_else(|e| fail(&format!("{}: {e}", dp.display())));
            let read = m.import_text(text.as_bytes());
            check_problems(&m, "import");
            if read != n {
                fail(&format!("import read {read} records of {n}"));
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        say(&format!("{n} peers: text {} MB, database {} MB, imported in {ms:.0} ms",
            std::fs::metadata(&tp).unwrap().len() >> 20, std::fs::metadata(&dp).unwrap().len() >> 20));
        if n == *sizes.last().unwrap() {
            emit("fleet-import", "db", "ms", &[ms]);
        }
        f.text.push((n, tp));
        f.db.push((n, dp));
    }
    f
}

/// Median update latency: `record_success` on random existing peers, each timed.
fn update_latency(m: &Memory, n: usize, count: usize) -> Vec<f64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<Key> = (0..count).map(|_| peer(rng.below(n.max(1)))).collect();
    let mut us = Vec::with_capacity(count);
    for k in &keys {
        let t0 = Instant::now();
        m.record_success(k, Rung::Modern, true, true, true);
        us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    us
}

/// Lookups per second per thread, `threads` threads on random existing peers.
fn lookups(m: &Arc<Memory>, keys: &Arc<Vec<Key>>, threads: usize, dur: Duration) -> f64 {
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (m, keys) = (m.clone(), keys.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x2545_f491 + t as u64 * 0x1000_0001);
                let t0 = Instant::now();
                let mut done = 0u64;
                while t0.elapsed() < dur {
                    for _ in 0..1000 {
                        std::hint::black_box(m.get(&keys[rng.below(keys.len())]));
                    }
                    done += 1000;
                }
                done as f64 / t0.elapsed().as_secs_f64()
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).sum::<f64>() / threads as f64
}

fn store_figures(files: &Files, n: usize, quick: bool) {
    let exe = std::env::current_exe().unwrap();
    let keys: Arc<Vec<Key>> = Arc::new((0..n.max(1)).map(peer).collect());
    let dur = Duration::from_millis(if quick { 100 } else { 1000 });
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let hot: Arc<Vec<Key>> = Arc::new((0..10_000).map(|_| peer(rng.below(n.max(1)))).collect());
    for kind in ["db", "text"] {
        // Opening in a fresh process, five times: what every delivery process pays.
        let path = files.copy(kind, n, &format!("store-{kind}"));
        let mut open_ms = Vec::new();
        for _ in 0..5 {
            let out = Command::new(&exe).args(["open", kind]).arg(&path).output().unwrap();
            if !out.status.success() {
                fail(&format!("open {kind}: {}", String::from_utf8_lossy(&out.stderr)));
            }
            open_ms.push(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap());
        }
        emit("fleet-open", kind, "ms", &open_ms);
        let m = open(kind, &path).unwrap();
        // The text file rewrites every peer at every update: a handful is enough.
        let count = match kind {
            "db" => 2000,
            _ if n >= 1_000_000 => 3,
            _ => 5,
        };
        let us = update_latency(&m, n, count);
        if us.len() > 20 {
            emit_spread("fleet-update", kind, "us", &us);
        } else {
            emit("fleet-update", kind, "us", &us);
        }
        for threads in [1, 2] {
            let v = lookups(&m, &keys, threads, dur);
            emit(&format!("fleet-lookups-{threads}t"), kind, "lookups/s/thread", &[v]);
        }
        // Among 10,000 of the peers, picked at random (a mail system's hot
        // destinations, as bench.rs's in-process figure): in key order they are spread
        // over the whole database, so this is what a hot set costs, not a cached tree.
        let v = lookups(&m, &hot, 1, dur);
        emit("fleet-lookups-hot", kind, "lookups/s/thread", &[v]);
        check_problems(&m, "store figures");
        say(&format!("{kind}: open {:.1} ms, update {:.1} us (median of {count})", median(&open_ms), median(&us)));
    }
}

/// `mailtls-zoo normal`, its port, and a thread that drains its log (one line per
/// connection: a full pipe would stop the server).
fn start_zoo() -> (Child, u16) {
    let zoo = std::env::var("MAILTLS_ZOO").unwrap_or_else(|_| fail("MAILTLS_ZOO must name mailtls-zoo"));
    let mut child = Command::new(zoo).arg("normal").stdout(Stdio::piped()).spawn().unwrap_or_else(|e| fail(&format!("mailtls-zoo: {e}")));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port = first.trim().trim_end_matches("\"}").rsplit(':').next().unwrap().parse().unwrap_or_else(|_| fail(&format!("zoo said {first:?}")));
    thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
    (child, port)
}

/// Milliseconds from spawn to exit of one delivery process (`cmd` built afresh).
fn time_process(mut cmd: Command, what: &str) -> f64 {
    let t0 = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        fail(&format!("{what}: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    ms
}

fn deliveries(files: &Files, sizes: &[usize], port: u16, quick: bool) {
    let exe = std::env::current_exe().unwrap();
    let client = std::env::var("MAILTLS_CLIENT").ok().filter(|c| Path::new(c).exists());
    if client.is_none() {
        say("MAILTLS_CLIENT not set or missing: no C client row");
    }
    // Warm-up: binaries and libraries in the page cache.
    let deliver = |kind: &str, path: &Path| {
        let mut c = Command::new(&exe);
        c.args(["deliver", kind]).arg(path).arg(port.to_string());
        c
    };
    time_process(deliver("none", Path::new("-")), "warm-up");
    for &n in sizes {
        // The rows of one size take turns, one delivery each, so that a burst of load
        // from the rest of the machine falls on all of them alike. The row without
        // memory (the floor every delivery pays) goes with the first size.
        let mut rows: Vec<(&str, Option<PathBuf>, usize)> = Vec::new();
        let runs = if quick { 5 } else { 20 };
        if n == sizes[0] {
            rows.push(("none", None, runs));
        }
        // The text file at a million peers costs seconds a delivery: four are enough.
        rows.push(("text", Some(files.copy("text", n, "deliver-text")), if n >= 1_000_000 && !quick { 4 } else { runs }));
        rows.push(("db", Some(files.copy("db", n, "deliver-db")), runs));
        if client.is_some() {
            rows.push(("db-c", Some(files.copy("db", n, "deliver-c")), runs));
        }
        let mut ms: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        for i in 0..runs {
            for (r, (kind, path, want)) in rows.iter().enumerate() {
                if i >= *want {
                    continue;
                }
                let what = format!("deliver {kind} {n}");
                let cmd = match (*kind, path) {
                    ("db-c", Some(p)) => {
                        let mut cmd = Command::new(client.as_ref().unwrap());
                        cmd.arg("--memory").arg(p).args(["--policy", "encrypt", "--servername", "localhost"]).arg(format!("127.0.0.1:{port}"));
                        cmd
                    }
                    (k, Some(p)) => deliver(k, p),
                    (k, None) => deliver(k, Path::new("-")),
                };
                ms[r].push(time_process(cmd, &what));
            }
        }
        for ((kind, path, _), v) in rows.iter().zip(&ms) {
            say(&format!("deliver: {kind}, {n} peers: {:.1} ms (median of {})", median(v), v.len()));
            match path {
                None => emit("fleet-deliver-none", kind, "ms", v),
                Some(p) => {
                    emit(&format!("fleet-deliver-{n}"), kind, "ms", v);
                    let m = open(if *kind == "text" { "text" } else { "db" }, p).unwrap();
                    if m.get(&Key::new(Proto::Smtp, "127.0.0.1", port)).pinned.is_none() {
                        fail(&format!("deliver {kind} {n}: the deliveries' record is not in the memory"));
                    }
                    drop(m);
                    let _ = std::fs::remove_dir_all(p.parent().unwrap());
                }
            }
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
}

/// `workers` processes of `per` sessions each, started together; sessions per second
/// over the wall time from the go to the last worker's `done`.
fn fleet_run(kind: &str, path: &Path, port: u16, workers: usize, per: usize) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let mut ws: Vec<Worker> = (0..workers)
        .map(|w| {
            let mut child = Command::new(&exe)
                .args(["fleet-worker", kind])
                .arg(path)
                .args([port.to_string(), w.to_string(), per.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            Worker { child, stdin, out }
        })
        .collect();
    for w in &mut ws {
        let mut l = String::new();
        w.out.read_line(&mut l).unwrap();
        if l.trim() != "ready" {
            fail(&format!("fleet worker ({kind}) did not start: {l:?}"));
        }
    }
    let t0 = Instant::now();
    for w in &mut ws {
        w.stdin.write_all(b"go\n").unwrap();
        w.stdin.flush().unwrap();
    }
    let mut failed = 0;
    for w in &mut ws {
        let mut l = String::new();
        w.out.read_line(&mut l).unwrap();
        let f: Vec<usize> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        if f.len() != 2 {
            fail(&format!("fleet worker ({kind}) ended with {l:?}"));
        }
        failed += f[1];
    }
    let secs = t0.elapsed().as_secs_f64();
    for w in &mut ws {
        let st = w.child.wait().unwrap();
        if !st.success() {
            fail(&format!("fleet worker ({kind}) exited with {st}"));
        }
    }
    if failed > 0 {
        fail(&format!("fleet ({kind}): {failed} sessions failed"));
    }
    (workers * per) as f64 / secs
}

fn fleet(files: &Files, n: usize, port: u16, quick: bool) {
    let (workers, per) = (8, if quick { 25 } else { 2000 });
    // Without memory, then with, three times: interleaved so that a change in the
    // machine's load (it is shared) falls on both sides; each figure is the median of
    // its rounds.
    let rounds = if quick { 1 } else { 3 };
    let (mut none, mut db) = (Vec::new(), Vec::new());
    let mut lost_total = 0;
    for r in 0..rounds {
        let v = fleet_run("none", Path::new("-"), port, workers, per);
        say(&format!("fleet round {}: no memory: {v:.0} sessions/s", r + 1));
        none.push(v);
        let path = files.copy("db", n, "fleet");
        let v = fleet_run("db", &path, port, workers, per);
        say(&format!("fleet round {}: database of {n} peers: {v:.0} sessions/s", r + 1));
        db.push(v);
        // Every session's record must be there, and every pre-filled one still.
        let m = open("db", &path).unwrap();
        let mut lost = 0;
        for w in 0..workers {
            for i in 0..per {
                if m.get(&Key::new(Proto::Smtp, &fleet_host(w, i), port)).pinned.is_none() {
                    lost += 1;
                }
            }
        }
        let total = m.list().map_or(0, |l| l.len());
        if total != n + workers * per {
            say(&format!("the database holds {total} records, not {} + {}", n, workers * per));
            lost += (n + workers * per).saturating_sub(total);
        }
        check_problems(&m, "fleet count");
        drop(m);
        eprintln!("mailtls-fleet: fleet round {}: {} new records, {total} in all, lost: {lost}", r + 1, workers * per);
        lost_total += lost;
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
    emit("fleet-sessions", "none", "sessions/s", &none);
    emit("fleet-sessions", "db", "sessions/s", &db);
    emit("fleet-workers", "db", "processes", &[workers as f64]);
    emit("fleet-per-worker", "db", "sessions", &[per as f64]);
    emit("fleet-lost", "db", "records", &[lost_total as f64]);
    if lost_total > 0 {
        fail(&format!("{lost_total} records lost by the fleet"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| fail("missing argument"));
    match args.get(1).map(String::as_str) {
        Some("open") => return child_open(&arg(2), Path::new(&arg(3))),
        Some("deliver") => return child_deliver(&arg(2), Path::new(&arg(3)), arg(4).parse().unwrap()),
        Some("fleet-worker") => {
            return child_fleet_worker(&arg(2), Path::new(&arg(3)), arg(4).parse().unwrap(), arg(5).parse().unwrap(), arg(6).parse().unwrap())
        }
        Some("fill") => {
            let (kind, path, n) = (arg(2), PathBuf::from(arg(3)), arg(4).parse().unwrap());
            let text = v1_text(n);
            if kind == "text" {
                std::fs::write(&path, text).unwrap();
            } else {
                open(&kind, &path).unwrap().import_text(text.as_bytes());
            }
            return;
        }
        Some("lookups") => {
            let (kind, path, n, threads): (String, PathBuf, usize, usize) = (arg(2), arg(3).into(), arg(4).parse().unwrap(), arg(5).parse().unwrap());
            let m = open(&kind, &path).unwrap();
            let keys = Arc::new((0..n).map(peer).collect());
            println!("{:.0}", lookups(&m, &keys, threads, Duration::from_secs(3)));
            return;
        }
        None | Some("--quick") => {}
        Some(other) => fail(&format!("unknown command {other:?}")),
    }
    let quick = args.get(1).is_some_and(|a| a == "--quick");
    let sizes: &[usize] = if quick { &[0, 10_000] } else { &[0, 10_000, 100_000, 1_000_000] };
    let big = *sizes.last().unwrap();
    let dir = std::env::var_os("FLEET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mailtls-fleet-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    emit("fleet-entries", "mailtls", "entries", &[big as f64]);
    let t0 = Instant::now();
    let files = fill(&dir, sizes);
    store_figures(&files, big, quick);
    let (mut zoo, port) = start_zoo();
    deliveries(&files, sizes, port, quick);
    fleet(&files, big, port, quick);
    let _ = zoo.kill();
    let _ = zoo.wait();
    let _ = std::fs::remove_dir_all(&dir);
    say(&format!("done in {:.0} s", t0.elapsed().as_secs_f64()));
}
