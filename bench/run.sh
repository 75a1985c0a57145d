#!/usr/bin/env bash
# make bench: builds in release mode and measures mailtls against OpenSSL 3 and bare
# rustls in one run (bench/bench.c, bench/bench.rs), with an ECDSA P-256 and an RSA-2048
# server certificate; prints the table and writes bench/results/ (the raw JSON lines,
# the table, the chart). --quick: one short run of everything (make bench-smoke, in
# make test: proves the benchmarks still build and start; its figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=""; [ "${1:-}" = --quick ] && QUICK=--quick
OUT=$ROOT/build/bench
mkdir -p "$OUT"
cargo build --release --quiet --features bench --bin mailtls-bench
cargo build --release --quiet --lib --bin mailtls-zoo
export MAILTLS_ZOO=$ROOT/target/release/mailtls-zoo   # the recovery-cost figures' servers
${CC:-gcc} -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -I"$ROOT/include" bench/bench.c \
  target/release/libmailtls.a -lssl -lcrypto -lpthread -ldl -lm -o "$OUT/bench-c"

cd "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ecdsa.key -out ecdsa.pem -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.pem -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
: >results.jsonl
# The handshake figures run on one CPU (BENCH_CPU, the last one by default), client and
# server threads side by side: a session is a dozen ping-pongs between them, and on a
# virtual machine a wakeup on the other CPU costs tens of microseconds, the same for
# every implementation, which would measure the scheduler rather than the TLS code
# (see BENCHMARKS.md for figures both ways). BENCH_CPU=none: no pinning. Bulk,
# memory and the intolerance memory (two threads) run unpinned.
CPU=${BENCH_CPU:-$(( $(nproc) - 1 ))}
PIN=(taskset -c "$CPU"); [ "$CPU" = none ] && PIN=()
for cert in ecdsa rsa; do
  echo "bench: $cert: mailtls and OpenSSL (C) ..." >&2
  BENCH_PART=sessions "${PIN[@]}" ./bench-c $cert.pem $cert.key $cert $QUICK >>results.jsonl
  BENCH_PART=rest ./bench-c $cert.pem $cert.key $cert $QUICK >>results.jsonl
  echo "bench: $cert: bare rustls, crypto floor, memory (Rust) ..." >&2
  BENCH_PART=sessions "${PIN[@]}" "$ROOT/target/release/mailtls-bench" $cert.pem $cert.key $cert $QUICK >>results.jsonl
  BENCH_PART=rest "$ROOT/target/release/mailtls-bench" $cert.pem $cert.key $cert $QUICK >>results.jsonl
done
python3 "$ROOT/bench/report.py" results.jsonl table.md ratios.svg
echo
cat table.md
if [ -z "$QUICK" ]; then
  mkdir -p "$ROOT/bench/results"
  cp results.jsonl table.md ratios.svg "$ROOT/bench/results/"
  echo "bench: results in bench/results/ (table.md, ratios.svg, results.jsonl)"
else
  n=$(grep -c '^{' results.jsonl)
  [ "$n" -ge 30 ] || { echo "bench-smoke: only $n figures" >&2; exit 1; }
  echo "bench-smoke: $n figures, every benchmark built and ran"
fi
