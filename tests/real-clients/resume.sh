#!/usr/bin/env bash
# Session resumption against mailtls-server (issue 13, point 4). The server forks a
# child per connection after building its config, so a ticket one child issued must
# open in the next one. openssl s_client (-sess_out, then -sess_in) and gnutls-cli
# (--resume) over TLS 1.2 and TLS 1.3, STARTTLS smtp and implicit TLS: the second
# connection must be resumed. Run by `make real-clients`; installs gnutls-bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SERVER=$ROOT/build/bin/mailtls-server
[ -x "$SERVER" ] || { echo "resume: $SERVER is missing: make examples" >&2; exit 1; }
need=()
command -v gnutls-cli >/dev/null || need+=(gnutls-bin)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "resume: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-resume.XXXXXX")
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
fail() { echo "resume: FAILED: $*" >&2; FAILED=1; }

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1

# start NAME ARGS...: a server on 127.0.0.1 port 0; sets PORT
start() {
  local name=$1; shift
  local log=$TMP/$name.json
  "$SERVER" --listen 127.0.0.1:0 --hostname localhost --cert "$TMP/cert.pem" --key "$TMP/key.pem" \
    --json-log --timeout 20 "$@" >"$log" 2>"$TMP/$name.err" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$log" ] && break; sleep 0.1; done
  PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$log")
  [ -n "$PORT" ] || { cat "$TMP/$name.err" >&2; echo "resume: $name did not start" >&2; exit 1; }
}
start starttls; STARTTLS_PORT=$PORT
start implicit --implicit; IMPLICIT_PORT=$PORT

row() { ROWS+=("$(printf '%-12s %-8s %-9s %s' "$1" "$2" "$3" "$4")"); }

# openssl s_client: the first connection saves its session, the second offers it.
# The commands are read to the end (the server closes after QUIT's reply), so the
# TLS 1.3 tickets, sent after the handshake, are in the saved session.
for ver in 1.2 1.3; do
  for mode in starttls implicit; do
    if [ $mode = starttls ]; then args=(-starttls smtp -connect "127.0.0.1:$STARTTLS_PORT")
    else args=(-connect "127.0.0.1:$IMPLICIT_PORT"); fi
    flag=-tls1_${ver#1.}
    sess=$TMP/openssl-$ver-$mode.sess
    out1=$TMP/openssl-$ver-$mode.1 out2=$TMP/openssl-$ver-$mode.2
    printf 'EHLO openssl.test\r\nQUIT\r\n' | timeout 20 openssl s_client "$flag" "${args[@]}" -CAfile "$TMP/cert.pem" \
      -verify_return_error -servername localhost -ign_eof -sess_out "$sess" >"$out1" 2>&1 || true
    printf 'EHLO openssl.test\r\nQUIT\r\n' | timeout 20 openssl s_client "$flag" "${args[@]}" -CAfile "$TMP/cert.pem" \
      -verify_return_error -servername localhost -ign_eof -sess_in "$sess" >"$out2" 2>&1 || true
    first=$(grep -m1 -oE '^(New|Reused), TLSv1\.[0-9]' "$out1" || echo none)
    second=$(grep -m1 -oE '^(New|Reused), TLSv1\.[0-9]' "$out2" || echo none)
    row openssl "$mode" "TLS $ver" "$first -> $second"
    [ "$first" = "New, TLSv$ver" ] || fail "openssl $ver $mode: first connection: $first ($(tail -3 "$out1"))"
    [ "$second" = "Reused, TLSv$ver" ] || fail "openssl $ver $mode: second connection not resumed: $second"
    grep -q '^221 ' "$out2" || fail "openssl $ver $mode: the resumed session carried no dialogue ($(tail -3 "$out2"))"
  done
done

# gnutls-cli --resume: connects, disconnects and connects again offering the session.
for ver in 1.2 1.3; do
  if [ $ver = 1.2 ]; then prio=NORMAL:-VERS-ALL:+VERS-TLS1.2; else prio=NORMAL:-VERS-ALL:+VERS-TLS1.3; fi
  for mode in starttls implicit; do
    if [ $mode = starttls ]; then args=(--starttls-proto=smtp -p "$STARTTLS_PORT")
    else args=(-p "$IMPLICIT_PORT"); fi
    out=$TMP/gnutls-$ver-$mode.out
    printf 'QUIT\r\n' | timeout 30 gnutls-cli --resume --priority "$prio" --x509cafile "$TMP/cert.pem" "${args[@]}" \
      localhost >"$out" 2>&1 || true
    got=$(grep -q 'This is a resumed session' "$out" && echo resumed || echo "not resumed")
    row gnutls-cli "$mode" "TLS $ver" "$got"
    grep -q "(TLS$ver-" "$out" || fail "gnutls-cli $ver $mode: not TLS $ver ($(grep -m1 Description "$out" || tail -3 "$out"))"
    [ "$got" = resumed ] || fail "gnutls-cli $ver $mode: the second connection was not resumed ($(tail -5 "$out"))"
  done
done

# Every connection was served by its own child: the server's log has one line each.
n=$(( $(wc -l <"$TMP/starttls.json") + $(wc -l <"$TMP/implicit.json") - 2 ))
[ "$n" -eq 16 ] || fail "expected 16 connections in the servers' logs, found $n"

# Servers started apart (issue 15, point 3): a session begun on server A resumes on
# server B when both read the same --ticket-keys file; after a rotation, a server with
# (new, old) still opens A's tickets; a server without the old key, or without keys,
# gives a full handshake. openssl s_client, TLS 1.3 and 1.2, STARTTLS.
openssl rand -hex 32 >"$TMP/old.keys"
{ openssl rand -hex 32; cat "$TMP/old.keys"; } >"$TMP/rotated.keys"
head -1 "$TMP/rotated.keys" >"$TMP/new.keys"
chmod 600 "$TMP"/*.keys
start keys-a --ticket-keys "$TMP/old.keys"; A_PORT=$PORT
start keys-b --ticket-keys "$TMP/old.keys"; B_PORT=$PORT
start keys-rotated --ticket-keys "$TMP/rotated.keys"; ROT_PORT=$PORT
start keys-new --ticket-keys "$TMP/new.keys"; NEW_PORT=$PORT
start keys-none; NONE_PORT=$PORT
session() { # session PORT VERSION IN|OUT FILE OUTPUT
  local io=-sess_out; [ "$3" = in ] && io=-sess_in
  printf 'EHLO openssl.test\r\nQUIT\r\n' | timeout 20 openssl s_client "-tls1_${2#1.}" -starttls smtp \
    -connect "127.0.0.1:$1" -CAfile "$TMP/cert.pem" -verify_return_error -servername localhost -ign_eof \
    "$io" "$4" >"$5" 2>&1 || true
  grep -m1 -oE '^(New|Reused), TLSv1\.[0-9]' "$5" || echo none
}
for ver in 1.3 1.2; do
  sess=$TMP/apart-$ver.sess
  first=$(session "$A_PORT" $ver out "$sess" "$TMP/apart-$ver.a")
  [ "$first" = "New, TLSv$ver" ] || fail "ticket keys $ver: server A: $first"
  for target in B:$B_PORT:Reused rotated:$ROT_PORT:Reused new:$NEW_PORT:New none:$NONE_PORT:New; do
    IFS=: read -r name port want <<<"$target"
    got=$(session "$port" $ver in "$sess" "$TMP/apart-$ver.$name")
    row openssl "A -> $name" "TLS $ver" "$got"
    [ "$got" = "$want, TLSv$ver" ] || fail "ticket keys $ver: A's session on server $name: $got, wanted $want"
    grep -q '^221 ' "$TMP/apart-$ver.$name" || fail "ticket keys $ver: server $name carried no dialogue"
  done
done
# A key file open to others is refused at start, naming its mode.
chmod 644 "$TMP/old.keys"
if "$SERVER" --listen 127.0.0.1:0 --ticket-keys "$TMP/old.keys" --once >/dev/null 2>"$TMP/mode.err"; then
  fail "a ticket key file of mode 0644 was accepted"
fi
grep -q "mode 0644" "$TMP/mode.err" || fail "the refusal does not name the mode: $(cat "$TMP/mode.err")"

printf '\n  %-12s %-8s %-9s %s\n' client mode version result
for r in "${ROWS[@]}"; do printf '  %s\n' "$r"; done
[ $FAILED -eq 0 ] || exit 1
echo "resume: all resumed"
