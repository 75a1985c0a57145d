#!/usr/bin/env bash
# Real SMTP clients against mailtls-server on loopback (issue 4): swaks, openssl
# s_client, curl, Python's smtplib and gnutls-cli each deliver a message over
# STARTTLS; a legacy client (tlslite-ng) sends an SSLv2-compatible hello, which
# --legacy-hello handoff completes through OpenSSL and the default refuses cleanly;
# on an --implicit port the SSLv2-compatible and TLS 1.0 hellos of that client and
# openssl s_client -tls1 are handed off and deliver too;
# server-side memory lets that client's plaintext retry through, except under
# --require-tls. Each message must land in the maildir and each connection's hello
# format and TLS version must be in the server's JSON log. Prints a table.
# Run by `make test` (target real-clients); installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SERVER=$ROOT/build/bin/mailtls-server
[ -x "$SERVER" ] || { echo "real-clients: $SERVER is missing: make examples" >&2; exit 1; }

# ---- what the clients need: Debian's packages and PyPI ----
need=()
command -v swaks >/dev/null || need+=(swaks)
perl -MNet::SSLeay -MIO::Socket::SSL -e1 2>/dev/null || need+=(libnet-ssleay-perl libio-socket-ssl-perl)
command -v gnutls-cli >/dev/null || need+=(gnutls-bin)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "real-clients: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
VENV=$ROOT/build/venv
if ! "$VENV/bin/python" -c 'import tlslite' 2>/dev/null; then
  echo "real-clients: installing tlslite-ng into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'tlslite-ng==0.8.2'
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-real-clients.XXXXXX")
PIDS=()
cleanup() {
  local st=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
  exit $st
}
trap cleanup EXIT
FAILED=0
ROWS=()
fail() { echo "real-clients: FAILED: $*" >&2; FAILED=1; }

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1

# start NAME ARGS...: a server on 127.0.0.1 port 0; sets PORT and LOG (its JSON lines)
start() {
  local name=$1; shift
  mkdir -p "$TMP/$name/md"
  LOG=$TMP/$name/log.json
  "$SERVER" --listen 127.0.0.1:0 --hostname localhost --cert "$TMP/cert.pem" --key "$TMP/key.pem" \
    --maildir "$TMP/$name/md" --json-log --timeout 20 "$@" >"$LOG" 2>"$TMP/$name/err" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$LOG" ] && break; sleep 0.1; done
  PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$LOG")
  [ -n "$PORT" ] || { cat "$TMP/$name/err" >&2; echo "real-clients: $name did not start" >&2; exit 1; }
  MD=$TMP/$name/md/new
}
# the JSON line of connection number N (1-based) of a server log, once it is there
conn_line() {
  for _ in $(seq 50); do
    local l; l=$(sed -n "$(( $2 + 1 ))p" "$1")
    [ -n "$l" ] && { echo "$l"; return; }
    sleep 0.1
  done
}
field() {
  python3 -c "import json,sys
try: v = json.loads(sys.argv[1]).get(sys.argv[2])
except ValueError: v = 'missing'
print('null' if v is None else v)" "$1" "$2"
}
# check NAME LOG N EXPECT_HELLO EXPECT_DELIVERED(0|1): records a table row
check() {
  local name=$1 log=$2 n=$3 want_hello=$4 want_msgs=$5
  local l; l=$(conn_line "$log" "$n")
  local hello ver msgs action
  hello=$(field "$l" hello); ver=$(field "$l" tls_version); msgs=$(field "$l" messages); action=$(field "$l" hello_action)
  ROWS+=("$(printf '%-26s %-13s %-8s %-8s %s' "$name" "$hello" "$action" "$ver" "$msgs")")
  [ "$hello" = "$want_hello" ] || fail "$name: hello $hello, expected $want_hello ($l)"
  [ "$msgs" = "$want_msgs" ] || fail "$name: $msgs message(s) delivered, expected $want_msgs ($l)"
}
MSG=$'From: a@test\r\nTo: b@test\r\nSubject: real client\r\n\r\nhello\r\n'

# ---- the modern clients, one server ----
start modern
N=0; COUNT=0
delivered() { local c; c=$(ls "$MD" 2>/dev/null | wc -l); [ "$c" -gt "$COUNT" ] || fail "$1: no message in the maildir"; COUNT=$c; }

swaks --server 127.0.0.1 --port "$PORT" --tls --tls-verify --tls-ca-path "$TMP/cert.pem" --from a@test --to b@test \
  --helo swaks.test --h-Subject "from swaks" --body hello >"$TMP/swaks.out" 2>&1 || { cat "$TMP/swaks.out" >&2; fail swaks; }
N=$((N+1)); check swaks "$LOG" $N tls1.3 1; delivered swaks

printf 'EHLO openssl.test\r\nMAIL FROM:<a@test>\r\nRCPT TO:<b@test>\r\nDATA\r\nSubject: from openssl\r\n\r\nhello\r\n.\r\nQUIT\r\n' |
  timeout 20 openssl s_client -starttls smtp -connect "127.0.0.1:$PORT" -CAfile "$TMP/cert.pem" -verify_return_error \
  -servername localhost -quiet >"$TMP/openssl.out" 2>&1 || { cat "$TMP/openssl.out" >&2; fail "openssl s_client"; }
N=$((N+1)); check "openssl s_client" "$LOG" $N tls1.3 1; delivered "openssl s_client"

printf '%s' "$MSG" >"$TMP/msg.eml"
curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --resolve "localhost:$PORT:127.0.0.1" "smtp://localhost:$PORT/curl.test" \
  --mail-from a@test --mail-rcpt b@test --upload-file "$TMP/msg.eml" >"$TMP/curl.out" 2>&1 || { cat "$TMP/curl.out" >&2; fail curl; }
N=$((N+1)); check curl "$LOG" $N tls1.3 1; delivered curl

python3 - "$PORT" "$TMP/cert.pem" >"$TMP/smtplib.out" 2>&1 <<'PY' || { cat "$TMP/smtplib.out" >&2; fail smtplib; }
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with smtplib.SMTP("localhost", int(sys.argv[1]), local_hostname="smtplib.test", timeout=20) as s:
    s.starttls(context=ctx)
    s.sendmail("a@test", ["b@test"], "Subject: from smtplib\r\n\r\nhello\r\n")
PY
N=$((N+1)); check "python smtplib" "$LOG" $N tls1.3 1; delivered "python smtplib"

# gnutls-cli: plaintext until STARTTLS, then SIGALRM (--starttls) makes it start TLS.
(
  exec 3> >(timeout 20 gnutls-cli --starttls-proto=smtp --x509cafile "$TMP/cert.pem" -p "$PORT" localhost \
    >"$TMP/gnutls.out" 2>&1)
  for c in "EHLO gnutls.test" "MAIL FROM:<a@test>" "RCPT TO:<b@test>" "DATA"; do printf '%s\r\n' "$c" >&3; sleep 0.3; done
  printf 'Subject: from gnutls-cli\r\n\r\nhello\r\n.\r\nQUIT\r\n' >&3
  sleep 1
) || true
N=$((N+1)); check gnutls-cli "$LOG" $N tls1.3 1; delivered gnutls-cli
grep -q "250 2.0.0 Ok: queued" "$TMP/gnutls.out" || fail "gnutls-cli: no queued reply ($(tail -3 "$TMP/gnutls.out"))"

# ---- the legacy client: refused by default, completed through OpenSSL with handoff ----
LEGACY=("$VENV/bin/python" "$ROOT/tests/real-clients/sslv2_client.py" 127.0.0.1)
start refuse
rc=0; timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test >"$TMP/legacy1.out" 2>&1 || rc=$?
[ $rc -eq 3 ] || fail "legacy client without handoff: exit $rc, expected 3 (refused) ($(cat "$TMP/legacy1.out"))"
check "sslv2 client, refuse" "$LOG" 1 sslv2-compat 0
grep -q "refused by configuration" "$TMP/refuse/err" || fail "no refusal log line"

start handoff --legacy-hello handoff
timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test >"$TMP/legacy2.out" 2>&1 || fail "legacy client with handoff ($(cat "$TMP/legacy2.out"))"
check "sslv2 client, handoff" "$LOG" 1 sslv2-compat 1
[ "$(ls "$MD" | wc -l)" = 1 ] || fail "legacy handoff: no message in the maildir"
l=$(conn_line "$LOG" 1); [ "$(field "$l" tls_version)" = TLSv1 ] || fail "handoff: OpenSSL's TLS version not in the log ($l)"

# ---- the same legacy hellos first on an implicit-TLS port (RFC 8314) ----
# sslv2_client.py speaks TLS from the first byte with --implicit; --tls-hello sends
# a TLS 1.0 hello in the record format instead of the SSLv2-compatible one.
start implicit-handoff --implicit --legacy-hello handoff
IMPL_CONN=0 IMPL_MSGS=0
implicit_legacy() {
  local name=$1 want_hello=$2; shift 2
  local out=$TMP/implicit-$IMPL_CONN.out
  timeout 30 "$@" >"$out" 2>&1 || fail "$name: ($(cat "$out"))"
  IMPL_CONN=$((IMPL_CONN+1)) IMPL_MSGS=$((IMPL_MSGS+1))
  check "$name" "$LOG" $IMPL_CONN "$want_hello" 1
  local l; l=$(conn_line "$LOG" $IMPL_CONN)
  [ "$(field "$l" hello_action)" = handoff ] || fail "$name: not handed off ($l)"
  [ "$(field "$l" tls_version)" = TLSv1 ] || fail "$name: OpenSSL's TLS 1.0 not in the log ($l)"
  [ "$(ls "$MD" | wc -l)" = $IMPL_MSGS ] || fail "$name: no message in the maildir"
}
implicit_legacy "sslv2 client, implicit" sslv2-compat "${LEGACY[@]}" "$PORT" a@test b@test --implicit
implicit_legacy "tls1.0 client, implicit" tls1.0 "${LEGACY[@]}" "$PORT" a@test b@test --implicit --tls-hello
# openssl s_client -tls1, where the system OpenSSL still allows TLS 1.0 at security
# level 0 (Debian's does): asked of OpenSSL itself, not of the server under test.
if [ -n "$(openssl ciphers -s -tls1 'DEFAULT:@SECLEVEL=0' 2>/dev/null)" ]; then
  printf 'EHLO openssl.test\r\nMAIL FROM:<a@test>\r\nRCPT TO:<b@test>\r\nDATA\r\nSubject: from openssl -tls1\r\n\r\nhello\r\n.\r\nQUIT\r\n' \
    >"$TMP/tls1-dialogue"
  implicit_legacy "openssl -tls1, implicit" tls1.0 sh -c 'exec openssl s_client -tls1 -cipher "DEFAULT:@SECLEVEL=0" \
    -connect "127.0.0.1:$1" -quiet <"$2"' sh "$PORT" "$TMP/tls1-dialogue"
else
  ROWS+=("$(printf '%-26s %s' "openssl -tls1, implicit" "skipped: the system OpenSSL has no TLS 1.0 cipher at security level 0")")
fi

# ---- server-side memory: fail once, then plaintext gets through; not under require-TLS ----
start memory --memory "$TMP/server-memory"
rc=0; timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test >"$TMP/legacy3.out" 2>&1 || rc=$?
[ $rc -eq 3 ] || fail "memory: the first try must be refused (exit $rc)"
timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test --plaintext-if-not-offered >"$TMP/legacy5.out" 2>&1 ||
  fail "memory: the plaintext retry ($(cat "$TMP/legacy5.out"))"
grep -q "STARTTLS not offered: plaintext" "$TMP/legacy5.out" || fail "memory: STARTTLS still offered to the remembered client"
check "sslv2 client, remembered" "$LOG" 2 null 1
grep -q "127.0.0.1" "$TMP/server-memory" || fail "memory: the file does not hold the client"

start required --memory "$TMP/server-memory2" --require-tls
rc=0; timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test >/dev/null 2>&1 || rc=$?
rc=0; timeout 30 "${LEGACY[@]}" "$PORT" a@test b@test >"$TMP/legacy6.out" 2>&1 || rc=$?
[ $rc -eq 3 ] || fail "require-tls: STARTTLS must still be offered (and refused) on the retry (exit $rc)"
check "sslv2 client, require-tls" "$LOG" 2 sslv2-compat 0

printf '\n  %-26s %-13s %-8s %-8s %s\n' client hello action tls delivered
for r in "${ROWS[@]}"; do printf '  %s\n' "$r"; done
[ $FAILED -eq 0 ] || exit 1
echo "real-clients: all passed"
