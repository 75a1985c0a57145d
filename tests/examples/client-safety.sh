#!/usr/bin/env bash
# mailtls-client where a forged or hostile server tries to get a password or the
# client's time:
#  - an IMAP server greeting PREAUTH in plaintext (how STARTTLS is stripped): under may
#    with --user/--pass the client defers (exit 75) and sends not one byte; with
#    --plaintext-auth it lists the mailbox but sends no LOGIN or AUTHENTICATE; the same
#    greeting inside implicit TLS gets no login either;
#  - a server that answers STARTTLS with 220 and then never speaks TLS: --total-timeout
#    ends the whole negotiation (exit 75, reason timeout) long before the per-step
#    timeouts of every rung would.
# Run by `make test` (target examples-test); needs `cargo build` and `make examples`.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENT=$PWD/build/bin/mailtls-client
ZOO=$PWD/target/debug/mailtls-zoo
for b in "$CLIENT" "$ZOO"; do [ -x "$b" ] || { echo "client-safety: $b is missing" >&2; exit 1; }; done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-client-safety.XXXXXX")
PIDS=()
cleanup() {
  local st=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
  exit $st
}
trap cleanup EXIT
fail() { echo "client-safety: FAILED: $*" >&2; exit 1; }
field() { python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($1)"; }

# Starts a fixture that prints {"listening":"127.0.0.1:PORT"} first; sets PORT.
start() {
  local out=$1; shift
  "$@" >"$out" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.1; done
  PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$out")
  [ -n "$PORT" ] || fail "$* printed no port"
}

# ---- PREAUTH in plaintext ----
LOG=$TMP/plain.log
: >"$LOG"
start "$TMP/plain.out" python3 tests/examples/preauth_server.py "$LOG"
set +e
J=$("$CLIENT" --proto imap --policy may --timeout 10 --user alice --pass s3cret --json "127.0.0.1:$PORT" 2>"$TMP/err")
st=$?
set -e
[ $st = 75 ] || { cat "$TMP/err" >&2; fail "PREAUTH under may with a login: exit $st, expected 75"; }
[ "$(echo "$J" | field '(r["reason"], r["outcome"], r["preauth"])')" = "('preauth-plaintext', 'defer', True)" ] \
  || fail "PREAUTH under may with a login: $J"
# The server writes "-- closed" once it has read everything the connection carried.
closed() { for _ in $(seq 100); do grep -q -- "-- closed" "$LOG" && return 0; sleep 0.1; done; fail "no end of connection"; }
closed
[ "$(cat "$LOG")" = "-- closed" ] || fail "the client sent bytes after a forged PREAUTH: $(cat "$LOG")"
: >"$LOG"

J=$("$CLIENT" --proto imap --policy may --timeout 10 --user alice --pass s3cret --plaintext-auth --json \
      "127.0.0.1:$PORT" 2>"$TMP/err" >"$TMP/list") || true
J=$(tail -n 1 "$TMP/list")
grep -q "^INBOX 0 messages" "$TMP/list" || { cat "$TMP/err" >&2; fail "PREAUTH with --plaintext-auth: no listing"; }
grep -q "pre-authenticated the connection (PREAUTH): no login sent" "$TMP/err" || fail "no word of the PREAUTH on stderr"
closed
grep -q "SELECT INBOX" "$LOG" || fail "no SELECT reached the server"
! grep -qiE "LOGIN|AUTHENTICATE|s3cret" "$LOG" || fail "a login was sent in the authenticated state: $(cat "$LOG")"
echo "$J" | field 'r["warnings"]' | grep -q "plaintext-downgrade preauth-plaintext" || fail "no downgrade warning: $J"

# ---- PREAUTH inside implicit TLS ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
LOG=$TMP/tls.log
: >"$LOG"
start "$TMP/tls.out" python3 tests/examples/preauth_server.py "$LOG" --tls "$TMP/cert.pem" "$TMP/key.pem"
"$CLIENT" --proto imap --implicit --policy encrypt --timeout 10 --user alice --pass s3cret --json \
  "127.0.0.1:$PORT" 2>"$TMP/err" >"$TMP/list" || { cat "$TMP/err" >&2; fail "implicit TLS PREAUTH: exit $?"; }
grep -q "^INBOX 0 messages" "$TMP/list" || fail "implicit TLS PREAUTH: no listing"
closed
J=$(tail -n 1 "$TMP/list")
[ "$(echo "$J" | field '(r["outcome"], r["preauth"])')" = "('tls', True)" ] || fail "implicit TLS PREAUTH: $J"
! grep -qiE "LOGIN|AUTHENTICATE|s3cret" "$LOG" || fail "a login was sent in the authenticated state: $(cat "$LOG")"

# ---- a server that never speaks TLS after its 220 ----
start "$TMP/zoo.out" "$ZOO" hang-above:0
set +e
J=$("$CLIENT" --policy may --servername localhost --timeout 30 --total-timeout 2 --json "127.0.0.1:$PORT" 2>"$TMP/err")
st=$?
set -e
[ $st = 75 ] || { cat "$TMP/err" >&2; fail "--total-timeout: exit $st, expected 75"; }
[ "$(echo "$J" | field '(r["reason"], r["outcome"], len(r["attempts"]))')" = "('timeout', 'defer', 1)" ] \
  || fail "--total-timeout: $J"
echo "$J" | field 'r["detail"]' | grep -q "2000 ms in all" || fail "--total-timeout detail: $J"
echo "client-safety: ok (forged PREAUTH: nothing sent; --plaintext-auth: no login; implicit PREAUTH: no login; total deadline)"
