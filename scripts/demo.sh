#!/usr/bin/env bash
# `make demo`: mailtls-server and mailtls-client on loopback. The server listens on
# 127.0.0.1 with a port the kernel picks and a self-signed certificate it generates;
# the client delivers examples-c/sample-message.eml under policy encrypt. Prints the
# client's report, the server's JSON log line and the delivered maildir file; exits
# non-zero when the delivery failed. Needs `make examples` first.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$PWD/build/bin
MSG=$PWD/examples-c/sample-message.eml
for b in mailtls-server mailtls-client; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is missing: run 'make examples' first" >&2; exit 1; }
done
[ -r "$MSG" ] || { echo "demo: $MSG is missing" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-demo.XXXXXX")
SRV_PID=""
cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n=== %s ===\n' "$*"; }
pretty() {
  if command -v python3 >/dev/null 2>&1; then python3 -m json.tool; else cat; fi
}
SHOWN_SERVER_LOG=""
fail() {
  echo "demo: FAILED: $*" >&2
  if [ -z "$SHOWN_SERVER_LOG" ] && [ -s "$TMP/server.err" ]; then
    section "server log (stderr)" >&2
    cat "$TMP/server.err" >&2
  fi
  exit 1
}

# 1. The server, in the background; its first stdout line names the port.
"$BIN/mailtls-server" --listen 127.0.0.1:0 --maildir "$TMP/Maildir" --once --json-log \
  >"$TMP/server.out" 2>"$TMP/server.err" &
SRV_PID=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n '1s/^{"listening":"127\.0\.0\.1:\([0-9][0-9]*\)"}$/\1/p' "$TMP/server.out")
  [ -n "$PORT" ] && break
  kill -0 "$SRV_PID" 2>/dev/null || fail "the server exited before listening"
  sleep 0.1
done
[ -n "$PORT" ] || fail "the server did not print its port within 10 seconds"
echo "demo: mailtls-server listening on 127.0.0.1:$PORT (maildir $TMP/Maildir)"

# 2. The client: STARTTLS required (policy encrypt), one message.
CLIENT_STATUS=0
"$BIN/mailtls-client" --policy encrypt --json \
  --from alice@example.org --to bob@example.org --message "$MSG" \
  "127.0.0.1:$PORT" >"$TMP/client.json" 2>"$TMP/client.err" || CLIENT_STATUS=$?

# 3. The server handles one connection (--once) and exits after its log line.
for _ in $(seq 100); do
  kill -0 "$SRV_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$SRV_PID" 2>/dev/null; then
  fail "the server did not finish within 10 seconds of the client"
fi
SRV_STATUS=0
wait "$SRV_PID" || SRV_STATUS=$?
SRV_PID=""

section "client log (stderr of mailtls-client, exit status $CLIENT_STATUS)"
cat "$TMP/client.err"

section "client report (mailtls-client --json)"
if [ -s "$TMP/client.json" ]; then pretty <"$TMP/client.json"; else echo "(none)"; fi

section "server log (stderr of mailtls-server)"
cat "$TMP/server.err"
SHOWN_SERVER_LOG=1

section "server JSON log line (mailtls-server --json-log)"
SRV_LINE=$(sed -n '2,$p' "$TMP/server.out" | grep '"peer"' | tail -n 1 || true)
if [ -n "$SRV_LINE" ]; then printf '%s\n' "$SRV_LINE"; else echo "(none)"; fi

shopt -s nullglob
FILES=("$TMP"/Maildir/new/*)
section "delivered message: ${FILES[0]:-(none)}"
if [ ${#FILES[@]} -gt 0 ]; then cat "${FILES[0]}"; fi
echo

[ "$CLIENT_STATUS" -eq 0 ] || fail "mailtls-client exited with status $CLIENT_STATUS"
[ "$SRV_STATUS" -eq 0 ] || fail "mailtls-server exited with status $SRV_STATUS"
[ -n "$SRV_LINE" ] || fail "the server wrote no JSON log line"
case "$SRV_LINE" in
  *'"outcome":"tls"'*) ;;
  *) fail "the server did not see a TLS session" ;;
esac
case "$SRV_LINE" in
  *'"messages":0,'*) fail "the server received no message" ;;
esac
[ ${#FILES[@]} -eq 1 ] || fail "expected one delivered file in Maildir/new, found ${#FILES[@]}"
echo "demo: OK: one message delivered over STARTTLS"
