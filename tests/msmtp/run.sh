#!/usr/bin/env bash
# msmtp on mailtls (issue 16, point 5): builds msmtp from its release tarball
# (../shared/third-party/msmtp-1.8.33.tar.gz beside the clone; skipped with a
# message when it is absent) with the TLS backend msmtp/mtls-mailtls.c, against
# mailtls installed into a temporary prefix and found by pkg-config, and has it
# deliver:
#   - to mailtls-server over STARTTLS and over implicit TLS, checked against a trust
#     file and by fingerprint; a wrong fingerprint and a wrong trust file fail;
#   - to Postfix (run as the test's own processes on loopback, as in
#     tests/real-servers) over STARTTLS and implicit TLS, trust file;
#   - to Postfix behind tests/real-servers/proxy.py resetting ClientHellos over
#     1000 bytes, with MAILTLS_MEMORY set: the first run fails with a message saying
#     the intolerance was recorded, the second delivers at rung compact.
# Each delivery is checked in the maildir. How msmtp is built: its configure is
# told --with-tls=libtls with libtls_CFLAGS/_LIBS from `pkg-config mailtls`, and
# our backend is copied over src/mtls-libtls.c, so that msmtp's own Makefile
# compiles and links it; nothing else of msmtp is changed.
# Run by `make test` (target msmtp). Needs root for Postfix (skipped otherwise).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MSMTP_VERSION=1.8.33
TARBALL=${MSMTP_TARBALL:-$ROOT/../shared/third-party/msmtp-$MSMTP_VERSION.tar.gz}
PROFILE=${PROFILE:-release}
if [ ! -f "$TARBALL" ]; then
  echo "msmtp: SKIPPED: msmtp's source $TARBALL is absent (CI has it)"
  exit 0
fi
START=$(date +%s)

# ---- what the build needs: the tarball has configure.ac, no configure ----
need=()
command -v autoreconf >/dev/null || need+=(autoconf)
command -v automake >/dev/null || need+=(automake)
command -v autopoint >/dev/null || need+=(autopoint)
command -v pkg-config >/dev/null || need+=(pkgconf)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "msmtp: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
HAVE_POSTFIX=0
if [ "$(id -u)" -eq 0 ]; then
  bash "$ROOT/scripts/install-real-servers.sh" >/dev/null
  HAVE_POSTFIX=1
else
  echo "msmtp: not root: the Postfix cases are skipped"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-msmtp.XXXXXX")
chmod 755 "$TMP" # Postfix's unprivileged users walk through it
PIDS=()
PF=$TMP/postfix
cleanup() {
  local st=$?
  [ -f "$PF/etc/main.cf" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # Postfix's master can take a moment to go: wait for the processes of this test.
  for _ in $(seq 50); do pgrep -f "$PF/etc" >/dev/null || break; sleep 0.1; done
  [ $st = 0 ] || tail -n 20 "$PF/maillog" 2>/dev/null >&2 || true
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "msmtp: kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit $st
}
trap cleanup EXIT
FAILED=0 PASSED=0
fail() { echo "msmtp: FAIL: $*"; FAILED=$((FAILED + 1)); }
ok() { echo "msmtp: ok: $*"; PASSED=$((PASSED + 1)); }

# ---- mailtls into a prefix, msmtp against it ----
PREFIX=$TMP/usr
if ! make -C "$ROOT" --no-print-directory PROFILE="$PROFILE" install PREFIX="$PREFIX" >"$TMP/install.log" 2>&1; then
  cat "$TMP/install.log"; echo "msmtp: make install failed"; exit 1
fi
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
unset PKG_CONFIG_LIBDIR
tar xzf "$TARBALL" -C "$TMP"
SRC=$TMP/msmtp-$MSMTP_VERSION
cp "$ROOT/msmtp/mtls-mailtls.c" "$SRC/src/mtls-libtls.c"
build() {
  cd "$SRC"
  autoreconf -fi &&
    ./configure --with-tls=libtls --without-libgsasl --without-libidn --without-libsecret \
      --without-msmtpd --disable-nls \
      libtls_CFLAGS="$(pkg-config --cflags mailtls)" \
      libtls_LIBS="$(pkg-config --libs mailtls) -Wl,-rpath,$(pkg-config --variable=libdir mailtls)" &&
    grep -q '^#define HAVE_LIBTLS 1' config.h &&
    # msmtp 1.8.33 uses bool in base64.h without <stdbool.h> (C23 makes it a
    # keyword; Debian 12's gcc 12 is C17): include it everywhere.
    # Only src/: doc/ wants makeinfo for the manual.
    make -j2 -C src CFLAGS="-O2 -Wall -include stdbool.h"
}
if ! (build) >"$TMP/build.log" 2>&1; then
  tail -n 40 "$TMP/build.log"; echo "msmtp: building msmtp failed"; exit 1
fi
MSMTP=$SRC/src/msmtp
grep -q 'NEEDED.*libmailtls.so.0' <<<"$(readelf -d "$MSMTP")" || { echo "msmtp: msmtp does not link libmailtls.so.0"; exit 1; }
ok "msmtp $MSMTP_VERSION built with msmtp/mtls-mailtls.c ($(pkg-config --libs mailtls)), $(($(date +%s) - START)) s so far"

# ---- a test CA, a certificate for localhost, and another CA ----
pki() {
  cd "$TMP"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=mailtls msmtp test CA"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other-ca.pem \
    -days 2 -subj "/CN=some other CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out req.pem -subj /CN=localhost
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in req.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem
  chmod 644 cert.pem; chmod 600 key.pem
}
(pki) >"$TMP/pki.log" 2>&1 || { cat "$TMP/pki.log"; exit 1; }
FPR=$(openssl x509 -in "$TMP/cert.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
WRONG_FPR=$(openssl x509 -in "$TMP/other-ca.pem" -noout -fingerprint -sha256 | sed 's/.*=//')

# ---- mailtls-server, STARTTLS and implicit ----
server() { # NAME ARGS...: starts mailtls-server into $TMP/NAME; sets PORT
  mkdir -p "$TMP/$1"
  "$PREFIX/bin/mailtls-server" --listen 127.0.0.1:0 --hostname localhost --cert "$TMP/cert.pem" --key "$TMP/key.pem" \
    --maildir "$TMP/$1/md" --json-log --timeout 30 "${@:2}" >"$TMP/$1/log.json" 2>"$TMP/$1/err" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$TMP/$1/log.json" ] && break; sleep 0.1; done
  PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$TMP/$1/log.json")
  [ -n "$PORT" ] || { cat "$TMP/$1/err"; exit 1; }
}
server mts-starttls; P_MTS=$PORT
server mts-implicit --implicit; P_MTSI=$PORT

N=0
WRAP=() # a command to run msmtp under (valgrind, for one case)
# send NAME PORT MSMTP-ARGS...: msmtp sends one message to bob@test.example; output in $TMP/NAME.out
send() {
  local name=$1 port=$2; shift 2
  N=$((N + 1))
  printf 'From: a@client.example\r\nTo: bob@test.example\r\nSubject: %s\r\n\r\nhello from msmtp on mailtls\r\n' "$name" |
    "${WRAP[@]}" "$MSMTP" -C /dev/null -d --host=localhost --port="$port" --timeout=20 --auth=off --tls=on \
      --from=a@client.example "$@" bob@test.example >"$TMP/$name.out" 2>&1
}
# maildir_has DIR SUBJECT: a message with that subject arrived in DIR (10 s)
maildir_has() {
  for _ in $(seq 100); do grep -qs "^Subject: $2\$" "$1"/new/* && return 0; sleep 0.1; done
  return 1
}
params() { sed -n '/^TLS session parameters:/{n;s/^ *//;p}' "$1"; }
# delivers NAME DIR PORT ARGS...: the message is sent and arrives
delivers() {
  local name=$1 dir=$2 port=$3; shift 3
  if send "$name" "$port" "$@"; then
    if maildir_has "$dir" "$name"; then
      ok "$name: delivered ($(params "$TMP/$name.out"))"
    else
      fail "$name: msmtp succeeded but no message with Subject: $name reached $dir"
    fi
  else
    fail "$name: msmtp failed: $(grep -m2 '^msmtp:' "$TMP/$name.out" | tr '\n' ' ')"
  fi
}
# refused NAME PORT PATTERN ARGS...: msmtp fails, saying PATTERN, and sends no mail
refused() {
  local name=$1 port=$2 pattern=$3; shift 3
  if send "$name" "$port" "$@"; then
    fail "$name: msmtp delivered"
  elif grep -q "$pattern" "$TMP/$name.out"; then
    ok "$name: refused: $(grep -m1 "$pattern" "$TMP/$name.out")"
  else
    fail "$name: msmtp failed without '$pattern': $(grep '^msmtp:' "$TMP/$name.out" | tr '\n' ' ')"
  fi
  ! grep -q '^--> DATA' "$TMP/$name.out" || fail "$name: DATA was sent"
}

MD=$TMP/mts-starttls/md MDI=$TMP/mts-implicit/md
delivers mts-starttls-trust "$MD" "$P_MTS" --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
delivers mts-starttls-fingerprint "$MD" "$P_MTS" --tls-starttls=on --tls-fingerprint="$FPR"
delivers mts-implicit-trust "$MDI" "$P_MTSI" --tls-starttls=off --tls-trust-file="$TMP/ca.pem"
delivers mts-implicit-fingerprint "$MDI" "$P_MTSI" --tls-starttls=off --tls-fingerprint="$FPR"
refused mts-wrong-fingerprint "$P_MTS" 'fingerprint does not match' --tls-starttls=on --tls-fingerprint="$WRONG_FPR"
refused mts-wrong-trust-file "$P_MTS" 'TLS handshake failed' --tls-starttls=on --tls-trust-file="$TMP/other-ca.pem"
refused mts-implicit-wrong-trust-file "$P_MTSI" 'TLS handshake failed' --tls-starttls=off --tls-trust-file="$TMP/other-ca.pem"
refused mts-missing-trust-file "$P_MTS" 'cannot load the trust anchors' --tls-starttls=on \
  --tls-trust-file="$TMP/no-such-ca.pem"
refused mts-priorities "$P_MTS" 'cannot set priorities' --tls-starttls=on --tls-trust-file="$TMP/ca.pem" \
  --tls-priorities=NORMAL

# The backend's memory errors (msmtp itself leaks a little by design: no leak check).
if command -v valgrind >/dev/null; then
  WRAP=(valgrind -q --error-exitcode=99 --leak-check=no)
  delivers mts-starttls-valgrind "$MD" "$P_MTS" --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
  refused mts-wrong-fingerprint-valgrind "$P_MTS" 'fingerprint does not match' --tls-starttls=on --tls-fingerprint="$WRONG_FPR"
  ! grep -q '^==[0-9]*==' "$TMP/mts-wrong-fingerprint-valgrind.out" || fail "valgrind: $(grep -m3 '^==' "$TMP/mts-wrong-fingerprint-valgrind.out")"
  WRAP=()
fi

# ---- Postfix ----
if [ $HAVE_POSTFIX = 1 ]; then
  read -r P_SUB P_SMTPS < <(python3 -c "
import socket
s=[socket.socket() for _ in range(2)]
[x.bind(('127.0.0.1',0)) for x in s]
print(' '.join(str(x.getsockname()[1]) for x in s))")
  mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$TMP/vmail"
  chown postfix "$PF/data"
  chown nobody:nogroup "$TMP/vmail"
  printf 'bob@test.example bob/\n' >"$PF/etc/vmailbox"
  : >"$PF/etc/transport"
  sed -e "s|@PF@|$PF|g" -e "s|@TMP@|$TMP|g" "$ROOT/tests/real-servers/postfix-main.cf" >"$PF/etc/main.cf"
  sed -e "s|@SUB@|$P_SUB|g" -e "s|@SMTPS@|$P_SMTPS|g" "$ROOT/tests/real-servers/postfix-master.cf" >"$PF/etc/master.cf"
  postfix -c "$PF/etc" check
  postfix -c "$PF/etc" start-fg >"$PF/fg.log" 2>&1 &
  PIDS+=($!)
  for port in "$P_SUB" "$P_SMTPS"; do
    python3 -c "
import socket, sys, time
for _ in range(300):
    try:
        socket.create_connection(('127.0.0.1', $port), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)" || { echo "msmtp: Postfix does not listen on $port"; exit 1; }
  done
  PFV=$(postconf -d mail_version | sed 's/.*= //')
  VM=$TMP/vmail/bob
  delivers "postfix-$PFV-starttls-trust" "$VM" "$P_SUB" --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
  delivers "postfix-$PFV-implicit-trust" "$VM" "$P_SMTPS" --tls-starttls=off --tls-trust-file="$TMP/ca.pem"
  delivers "postfix-$PFV-starttls-fingerprint" "$VM" "$P_SUB" --tls-starttls=on --tls-fingerprint="$FPR"
  n=$(grep -c 'TLS connection established from localhost\[127.0.0.1\]: TLSv1.3' "$PF/maillog" || true)
  [ "$n" -ge 3 ] && ok "Postfix logged $n inbound TLS 1.3 connections from msmtp" || fail "Postfix logged $n TLS connections, not 3"

  # A box in front of Postfix that resets ClientHellos over 1000 bytes.
  PLOG=$TMP/proxy.log
  python3 "$ROOT/tests/real-servers/proxy.py" "$P_SUB" reset-above:1000 >"$PLOG" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$PLOG" ] && break; sleep 0.1; done
  P_PROXY=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$PLOG")
  [ -n "$P_PROXY" ] || { cat "$PLOG"; exit 1; }
  # Without a memory the run fails too, and says how to have the rung remembered.
  refused proxy-no-memory "$P_PROXY" 'a retry at rung compact may work; set MAILTLS_MEMORY' \
    --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
  export MAILTLS_MEMORY=$TMP/memory.db
  refused proxy-first "$P_PROXY" 'intolerance recorded: the next run starts at rung compact' \
    --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
  delivers proxy-second "$VM" "$P_PROXY" --tls-starttls=on --tls-trust-file="$TMP/ca.pem"
  grep -q 'rung compact' "$TMP/proxy-second.out" || fail "proxy-second: not at rung compact: $(params "$TMP/proxy-second.out")"
  actions=$(python3 -c "
import json, sys
print(' '.join('%s/%s' % (r['hello_bytes'], r['action']) for r in map(json.loads, open(sys.argv[1])) if 'conn' in r))" "$PLOG")
  case "$actions" in
    *"/reset "*"/reset "*"/pass") ok "proxy saw hellos (bytes/action): $actions" ;;
    *) fail "proxy log: $actions" ;;
  esac
  "$PREFIX/bin/mailtls-client" --memory "$MAILTLS_MEMORY" --list-memory >"$TMP/memory.txt" 2>&1 || true
  grep -q "smtp localhost $P_PROXY" "$TMP/memory.txt" && ok "memory: $(grep -m1 "smtp localhost $P_PROXY" "$TMP/memory.txt")" \
    || fail "memory has no record for localhost $P_PROXY: $(cat "$TMP/memory.txt")"
  unset MAILTLS_MEMORY
fi

echo "msmtp: $PASSED passed, $FAILED failed, $(($(date +%s) - START)) s"
[ $FAILED -eq 0 ]
