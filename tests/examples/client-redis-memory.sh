#!/usr/bin/env bash
# The intolerance memory shared through Redis (mailtls-client --memory-redis,
# examples-c/redis-store.c), against a redis-server of the test's own on 127.0.0.1
# and the recovery zoo (a server that resets hellos over 1000 bytes):
#   - process 1's first contact recovers at compact (two connections) and leaves the
#     record in Redis under mailtls:smtp 127.0.0.1 PORT, with a TTL of 60 days;
#   - three other processes at once, started from their own directories with an empty
#     environment (the "other hosts": nothing links them to process 1 but Redis),
#     start at compact on one connection; another key prefix shares nothing;
#   - a DEL through redis-cli makes the next contact new again;
#   - a record longer than the library's first buffer is read whole (ERANGE, then a
#     larger buffer); values that are not a record are no record, even when a careless
#     store would have passed them on as a valid one: a record followed by a NUL byte,
#     a key of another type (WRONGTYPE);
#   - Redis stopped (accepting connections, never answering) and Redis gone: the
#     client still gets TLS on two connections, says the memory is unavailable, does
#     not hang (each run is bounded by timeout(1)), and writes nothing over the record
#     it could not read.
# TCP on loopback rather than a unix socket, since the point is several hosts. Redis
# cannot take port 0 and report the port, so a free port is found by binding one in
# python and closing it; if something else takes it first redis-server fails to bind
# and the test tries another; a server is used only once INFO names our process.
# The other hosts are processes, not network namespaces: a namespace would cut them
# off from the loopback Redis and zoo unless the test built veth pairs, which needs
# privileges CI may not have.
# Run by `make test` (target examples-test); needs `cargo build` and `make examples`.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENT=$PWD/build/bin/mailtls-client
ZOO=$PWD/target/debug/mailtls-zoo
for b in "$CLIENT" "$ZOO"; do [ -x "$b" ] || { echo "client-redis-memory: $b is missing" >&2; exit 1; }; done

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "client-redis-memory: redis-server or redis-cli missing: running scripts/install-deps.sh"
  bash scripts/install-deps.sh || true
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "client-redis-memory: skipped: redis-server cannot be installed here"
    exit 0
  fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-client-redis.XXXXXX")
ZOO_PID=""
REDIS_PID=""
stop() { # PID: stops and reaps one of ours
  kill -CONT "$1" 2>/dev/null || true
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local st=$?
  [ -z "$ZOO_PID" ] || stop "$ZOO_PID"
  [ -z "$REDIS_PID" ] || stop "$REDIS_PID"
  if [ $st -ne 0 ] && [ -f "$TMP/redis.log" ]; then tail -5 "$TMP/redis.log" >&2; fi
  rm -rf "$TMP"
  exit $st
}
trap cleanup EXIT
fail() { echo "client-redis-memory: FAILED: $*" >&2; exit 1; }

RPORT=""
rcli() { redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }
start_redis() {
  local try
  for try in 1 2 3 4 5; do
    RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --dir "$TMP" \
      --logfile "$TMP/redis.log" --daemonize no &
    REDIS_PID=$!
    # Ready when it answers, and it is ours when INFO names its process: a server
    # someone else started on the port in between is never used.
    for _ in $(seq 200); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      [ "$(rcli INFO server 2>/dev/null | sed -n 's/^process_id:\([0-9]*\).*/\1/p')" = "$REDIS_PID" ] && return 0
      sleep 0.05
    done
    echo "client-redis-memory: redis-server on port $RPORT did not start (try $try)" >&2
    stop "$REDIS_PID"
    REDIS_PID=""
  done
  return 1
}
start_redis || fail "redis-server would not start"

"$ZOO" reset-above:1000 >"$TMP/zoo.out" &
ZOO_PID=$!
for _ in $(seq 50); do [ -s "$TMP/zoo.out" ] && break; sleep 0.1; done
PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$TMP/zoo.out")
[ -n "$PORT" ] || fail "the zoo printed no port"
KEY="mailtls:smtp 127.0.0.1 $PORT"

# run ERRFILE [SPEC]: one contact; the JSON report on stdout. timeout(1) turns a hang
# into a failure.
run() {
  timeout 60 "$CLIENT" --policy encrypt --servername localhost --timeout 10 \
    --memory-redis "${2:-127.0.0.1:$RPORT}" --json "127.0.0.1:$PORT" 2>"$1"
}
field() { python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($1)"; }
attempts() { field '[(a["connection"],a["rung"]) for a in r["attempts"]]'; }
NEW="[(1, 'modern'), (2, 'compact')]"
KNOWN="[(1, 'compact')]"

# Process 1: first contact.
J=$(run "$TMP/err1") || { cat "$TMP/err1" >&2; fail "first contact"; }
[ "$(echo "$J" | field 'r["outcome"]')" = tls ] || fail "first contact not tls: $J"
[ "$(echo "$J" | field '[(a["connection"],a["rung"],a["class"]) for a in r["attempts"]]')" = \
  "[(1, 'modern', 'intolerance'), (2, 'compact', 'none')]" ] || fail "first contact attempts: $J"
echo "$J" | field 'r["memory_events"]' | grep -q "recorded intolerance at rung modern" || fail "memory events: $J"
grep -q "memory-redis" "$TMP/err1" && fail "first contact: the store complained: $(cat "$TMP/err1")"

# The record, in Redis, under the default prefix, with the TTL.
[ "$(rcli --scan)" = "$KEY" ] || fail "keys in Redis: $(rcli --scan)"
REC=$(rcli GET "$KEY")
echo "$REC" | grep -q "tolerant=compact@[0-9]" || fail "record: $REC"
echo "$REC" | grep -q "intolerant=modern@[0-9]*,intolerance,1," || fail "record: $REC"
TTL=$(rcli TTL "$KEY")
[ "$TTL" -gt $((60 * 86400 - 300)) ] && [ "$TTL" -le $((60 * 86400)) ] || fail "TTL $TTL, not 60 days"
echo "client-redis-memory: process 1 left in Redis: \"$KEY\" = \"$REC\" (TTL $TTL s)"

# The other hosts, at once.
pids=()
for h in 2 3 4; do
  mkdir -p "$TMP/host$h"
  (cd "$TMP/host$h" && exec env -i PATH=/usr/bin:/bin timeout 60 "$CLIENT" --policy encrypt --servername localhost \
    --timeout 10 --memory-redis "127.0.0.1:$RPORT" --json "127.0.0.1:$PORT" >"$TMP/host$h/json" 2>"$TMP/host$h/err") &
  pids+=($!)
done
for i in 0 1 2; do
  h=$((i + 2))
  wait "${pids[$i]}" || { cat "$TMP/host$h/err" >&2; fail "host $h"; }
  J=$(cat "$TMP/host$h/json")
  [ "$(echo "$J" | attempts)" = "$KNOWN" ] || fail "host $h did not use process 1's record: $J"
  echo "$J" | field 'r["memory_events"]' | grep -q "start at rung compact" || fail "host $h events: $J"
done
echo "client-redis-memory: hosts 2, 3, 4 started at compact on one connection"

# Another prefix is another memory.
J=$(run "$TMP/err" "127.0.0.1:$RPORT/elsewhere:") || fail "other prefix"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "another prefix saw process 1's record: $J"
[ -n "$(rcli GET "elsewhere:smtp 127.0.0.1 $PORT")" ] || fail "no record under the other prefix"

# Forget through redis-cli.
[ "$(rcli DEL "$KEY")" = 1 ] || fail "DEL"
J=$(run "$TMP/err") || fail "after DEL"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "after DEL the first contact is new again: $J"
REC=$(rcli GET "$KEY")

# A value longer than the library's first buffer (4096 bytes): the store answers
# ERANGE and the library asks again with a larger one, so the record is read whole
# (spaces are field separators) and written back in its normal form.
rcli SET "$KEY" "$REC$(printf '%5000s' '')" >/dev/null
J=$(run "$TMP/err") || fail "long value"
[ "$(echo "$J" | attempts)" = "[(1, 'compact')]" ] || fail "a value longer than 4096 bytes was not read whole: $J"
grep -q "^tolerant=compact@[0-9]* .*[0-9]$" <<<"$(rcli GET "$KEY")" || fail "the long value was not written back"

# Values that are not a record. Each would start at compact if the store handed over
# what precedes the NUL, or the list's element.
printf '%s\0junk' "$REC" | rcli -x SET "$KEY" >/dev/null
[ "$(rcli STRLEN "$KEY")" = $((${#REC} + 5)) ] || fail "redis-cli -x did not store the NUL"
J=$(run "$TMP/err") || fail "NUL value"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "a value with a NUL was used: $J"
grep -q "holds a NUL byte" "$TMP/err" || fail "NUL value not logged: $(cat "$TMP/err")"

rcli DEL "$KEY" >/dev/null
rcli RPUSH "$KEY" "$REC" >/dev/null
J=$(run "$TMP/err") || fail "list value"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "a list was used as a record: $J"
grep -q "GET $KEY: WRONGTYPE.*: not a record" "$TMP/err" || fail "WRONGTYPE not logged: $(cat "$TMP/err")"
[ "$(rcli TYPE "$KEY")" = string ] || fail "the list was not replaced by a record"

# Redis stopped: the kernel still accepts connections, nothing answers. The record is
# there, so a memory that answered would give one connection.
kill -STOP "$REDIS_PID"
t0=$(date +%s.%N)
J=$(run "$TMP/err") || { cat "$TMP/err" >&2; fail "with Redis stopped"; }
t1=$(date +%s.%N)
kill -CONT "$REDIS_PID"
[ "$(echo "$J" | field 'r["outcome"]')" = tls ] || fail "with Redis stopped, not tls: $J"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "with Redis stopped: $J"
grep -q "memory-redis 127.0.0.1:$RPORT unavailable (no reply within 1000 ms)" "$TMP/err" ||
  fail "Redis stopped not logged: $(cat "$TMP/err")"
STOPPED=$(python3 -c "print(f'{$t1 - $t0:.1f}')")

# Redis gone.
stop "$REDIS_PID"
REDIS_PID=""
J=$(run "$TMP/err") || { cat "$TMP/err" >&2; fail "with Redis gone"; }
[ "$(echo "$J" | field 'r["outcome"]')" = tls ] || fail "with Redis gone, not tls: $J"
[ "$(echo "$J" | attempts)" = "$NEW" ] || fail "with Redis gone: $J"
grep -q "memory-redis 127.0.0.1:$RPORT unavailable (Connection refused)" "$TMP/err" ||
  fail "Redis gone not logged: $(cat "$TMP/err")"
# A store that could not be read is not written over: no SET was even tried.
! grep -q "SET $KEY" "$TMP/err" || fail "a SET was tried over a record that could not be read: $(cat "$TMP/err")"

echo "client-redis-memory: ok (process 1: 2 connections, record and TTL in Redis; 3 other" \
  "processes: 1 connection; DEL forgets; a long value read whole through ERANGE; NUL and list values" \
  "are no record; Redis" \
  "stopped (${STOPPED} s) or gone: TLS on 2 connections, logged)"
