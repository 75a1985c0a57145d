#!/usr/bin/env bash
# Builds every fuzz target once (cargo fuzz, libFuzzer, no sanitizer: works on stable
# rustc), then runs each for FUZZ_SECONDS (default 60) and prints, per target, the
# executions, executions per second, the time run, the coverage (libFuzzer's edge
# count), the corpus size and the crashes found. Exits 1 when
# any target found a crash, a hang (over FUZZ_TIMEOUT seconds for one input) or an
# out-of-memory (over FUZZ_RSS_MB).
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS each (make fuzz)
#   fuzz/run.sh --smoke         every target for 5 seconds (make fuzz-smoke, in make test)
#   fuzz/run.sh sniff ffi_session   only these
#
# Seeds are read from fuzz/corpus/<target>/ (committed, never written); what libFuzzer
# finds goes to fuzz/work/<target>/ and crash artifacts to fuzz/artifacts/<target>/,
# both ignored by git. Reproduce one with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

seconds="${FUZZ_SECONDS:-60}"
targets=()
for a in "$@"; do
  case "$a" in
    --smoke) seconds="${FUZZ_SMOKE_SECONDS:-5}" ;;
    -*) echo "run.sh: unknown option $a" >&2; exit 64 ;;
    *) targets+=("$a") ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(awk '/^\[\[bin\]\]/ { b = 1; next } b && /^name = / { gsub(/"/, "", $3); print $3; b = 0 }' Cargo.toml)
fi

command -v cargo-fuzz >/dev/null 2>&1 || bash ../scripts/install-deps.sh
triple="$(rustc -vV | sed -n 's/^host: //p')"
start=$(date +%s)
# One build for every target. --sanitizer none needs no nightly compiler; the
# coverage instrumentation (sancov) and libFuzzer itself work on stable.
mkdir -p work artifacts
if ! cargo fuzz build --sanitizer none >work/build.log 2>&1; then
  cat work/build.log >&2
  echo "run.sh: cargo fuzz build failed" >&2
  exit 1
fi
built=$(date +%s)
echo "run.sh: built in $((built - start)) s; ${seconds} s per target"

failed=0
summary="$here/work/summary.txt"
printf '%-16s %12s %10s %8s %6s %6s %8s  %s\n' target executions exec/s seconds cov corpus crashes result | tee "$summary"
for t in "${targets[@]}"; do
  bin="target/$triple/release/$t"
  [ -x "$bin" ] || { echo "run.sh: no target $t" >&2; exit 64; }
  mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log="work/$t.log"
  t0=$(date +%s.%N)
  rc=0
  "$bin" "work/$t" "corpus/$t" \
    -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
    -max_len=4096 -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  after=$(find "artifacts/$t" -type f | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  new=$((after - before))
  result=ok
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    result="FAILED (exit $rc): $(grep -m1 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || echo 'see log') -> $log"
    failed=1
  fi
  printf '%-16s %12s %10s %8.1f %6s %6s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$(awk "BEGIN{print $t1 - $t0}")" \
    "${cov:-?}" "${corp:-?}" "$new" "$result" | tee -a "$summary"
done
open=$(find regressions -type f ! -name '*.md' 2>/dev/null | wc -l)
echo "run.sh: total $(( $(date +%s) - start )) s; $open open reproducer(s) in fuzz/regressions (not run: see fuzz/regressions/README.md)"
exit $failed
