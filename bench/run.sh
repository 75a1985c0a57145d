#!/usr/bin/env bash
# make bench: builds in release mode and measures mailtls against OpenSSL 3 and bare
# rustls in one run (bench/bench.c, bench/bench.rs), with an ECDSA P-256 and an RSA-2048
# server certificate, then the intolerance memory at fleet scale (bench/fleet.rs);
# prints the table and writes bench/results/ (the raw JSON lines, the table, the chart).
# --quick: one short run of everything (make bench-smoke, in make test: proves the
# benchmarks still build and start; its figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=""; [ "${1:-}" = --quick ] && QUICK=--quick
OUT=$ROOT/build/bench
mkdir -p "$OUT"
cargo build --release --quiet --features bench --bin mailtls-bench --bin mailtls-fleet
cargo build --release --quiet --lib --bin mailtls-zoo
export MAILTLS_ZOO=$ROOT/target/release/mailtls-zoo   # the recovery-cost and fleet figures' server
# The C client against the release library, for the fleet figures' cross-check row
# (build/bench/examples, apart from the debug build the tests use); without hiredis
# or a compiler for it the row is left out, not the benchmark.
if make -s -C examples-c LIBDIR="$ROOT/target/release" BUILD="$OUT/examples" CFLAGS=-O2 \
     "$OUT/examples/bin/mailtls-client" >"$OUT/examples.log" 2>&1; then
  export MAILTLS_CLIENT=$OUT/examples/bin/mailtls-client
else
  echo "bench: the C client did not build (see $OUT/examples.log): no C client row" >&2
fi
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
# The memory at fleet scale (bench/fleet.rs): the database against the text file,
# delivery processes, 8 processes sharing one database; unpinned (it is processes on
# both CPUs by design). Fails when a record is lost or a delivery fails.
echo "bench: the memory at fleet scale (Rust, processes) ..." >&2
"$ROOT/target/release/mailtls-fleet" $QUICK >>results.jsonl
python3 "$ROOT/bench/report.py" results.jsonl table.md ratios.svg
echo
cat table.md
if [ -z "$QUICK" ]; then
  mkdir -p "$ROOT/bench/results"
  cp results.jsonl table.md ratios.svg "$ROOT/bench/results/"
  echo "bench: results in bench/results/ (table.md, ratios.svg, results.jsonl)"
else
  n=$(grep -c '^{' results.jsonl)
  f=$(grep -c '^{"what":"fleet-' results.jsonl)
  [ "$n" -ge 50 ] || { echo "bench-smoke: only $n figures" >&2; exit 1; }
  [ "$f" -ge 20 ] || { echo "bench-smoke: only $f fleet figures" >&2; exit 1; }
  echo "bench-smoke: $n figures ($f of the memory at fleet scale), every benchmark built and ran"
fi
