#!/usr/bin/env bash
# mailtls-client's persistent memory from the command line, against the recovery zoo:
# first contact with a server that resets large hellos recovers at compact (two
# connections, both attempts in the JSON report with rung, class and connection
# number, the memory events named); the next run uses one connection; --list-memory
# shows the record; --forget removes it, after which a run needs two connections again.
# Run by `make test` (target examples-test); needs `cargo build` and `make examples`.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENT=$PWD/build/bin/mailtls-client
ZOO=$PWD/target/debug/mailtls-zoo
for b in "$CLIENT" "$ZOO"; do [ -x "$b" ] || { echo "client-memory: $b is missing" >&2; exit 1; }; done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-client-memory.XXXXXX")
ZOO_PID=""
cleanup() {
  local st=$?
  if [ -n "$ZOO_PID" ]; then kill "$ZOO_PID" 2>/dev/null || true; wait "$ZOO_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
  exit $st
}
trap cleanup EXIT
fail() { echo "client-memory: FAILED: $*" >&2; exit 1; }

"$ZOO" reset-above:1000 >"$TMP/zoo.out" &
ZOO_PID=$!
for _ in $(seq 50); do [ -s "$TMP/zoo.out" ] && break; sleep 0.1; done
PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$TMP/zoo.out")
[ -n "$PORT" ] || fail "the zoo printed no port"
MEM=$TMP/memory

run() { "$CLIENT" --policy encrypt --servername localhost --timeout 10 --memory "$MEM" --json "127.0.0.1:$PORT" 2>"$TMP/err"; }
field() { python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($1)"; }

J1=$(run) || { cat "$TMP/err" >&2; fail "first contact"; }
[ "$(echo "$J1" | field 'r["outcome"]')" = tls ] || fail "first contact not tls: $J1"
[ "$(echo "$J1" | field '[(a["connection"],a["rung"],a["class"]) for a in r["attempts"]]')" = \
  "[(1, 'modern', 'intolerance'), (2, 'compact', 'none')]" ] || fail "first contact attempts: $J1"
echo "$J1" | field 'r["memory_events"]' | grep -q "recorded intolerance at rung modern" || fail "memory events: $J1"

J2=$(run) || fail "second contact"
[ "$(echo "$J2" | field '[(a["connection"],a["rung"]) for a in r["attempts"]]')" = "[(1, 'compact')]" ] \
  || fail "second contact attempts: $J2"
echo "$J2" | field 'r["memory_events"]' | grep -q "start at rung compact" || fail "second contact events: $J2"

LIST=$("$CLIENT" --memory "$MEM" --list-memory 2>/dev/null)
echo "$LIST" | grep -q "^smtp 127.0.0.1 $PORT .*tolerant=compact@.*intolerant=modern@" || fail "--list-memory: $LIST"

OUT=$("$CLIENT" --memory "$MEM" --forget "127.0.0.1:$PORT" 2>/dev/null)
[ "$OUT" = "forgot 1 record(s) of 127.0.0.1:$PORT" ] || fail "--forget: $OUT"
[ -z "$("$CLIENT" --memory "$MEM" --list-memory 2>/dev/null)" ] || fail "--forget left records"
grep -q "forgot 0 record" <<<"$("$CLIENT" --memory "$MEM" --forget nowhere.invalid 2>/dev/null)" || fail "--forget of an unknown host"
"$CLIENT" --list-memory 2>/dev/null && fail "--list-memory without --memory must be a usage error"

J3=$(run) || fail "third contact"
[ "$(echo "$J3" | field 'len(r["attempts"])')" = 2 ] || fail "after --forget the first contact is new again: $J3"

# The database speaks the version-1 text format both ways.
TEXT=$("$CLIENT" --memory "$MEM" --export-memory - 2>/dev/null)
[ "$(echo "$TEXT" | head -1)" = "mailtls-memory 1" ] || fail "--export-memory header: $TEXT"
echo "$TEXT" | grep -q "^smtp 127.0.0.1 $PORT .*intolerant=modern@" || fail "--export-memory record: $TEXT"
"$CLIENT" --memory "$MEM" --export-memory "$TMP/export.txt" 2>/dev/null
[ "$(cat "$TMP/export.txt")" = "$TEXT" ] || fail "--export-memory FILE differs from stdout"
OUT=$("$CLIENT" --memory "$TMP/other" --import-memory "$TMP/export.txt" 2>/dev/null)
[ "$OUT" = "imported 1 record(s) from $TMP/export.txt" ] || fail "--import-memory: $OUT"
J4=$("$CLIENT" --policy encrypt --servername localhost --timeout 10 --memory "$TMP/other" --json "127.0.0.1:$PORT" 2>"$TMP/err") \
  || fail "contact with the imported memory"
[ "$(echo "$J4" | field '[(a["connection"],a["rung"]) for a in r["attempts"]]')" = "[(1, 'compact')]" ] \
  || fail "the imported record is not used: $J4"

# An older version's text file is converted on first open and kept beside it.
cp "$TMP/export.txt" "$TMP/old"
LIST=$("$CLIENT" --memory "$TMP/old" --list-memory 2>/dev/null)
echo "$LIST" | grep -q "^smtp 127.0.0.1 $PORT " || fail "converted text file: $LIST"
cmp -s "$TMP/old.v1" "$TMP/export.txt" || fail "the text file was not kept as old.v1"
[ "$(stat -c %a "$TMP/old")" = 600 ] || fail "database mode $(stat -c %a "$TMP/old")"
"$CLIENT" --memory "$MEM" --export-memory x --forget y 2>/dev/null && fail "two memory commands at once must be a usage error"
echo "client-memory: ok (first contact 2 connections, next 1, list, forget, export, import, conversion)"
