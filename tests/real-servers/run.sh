#!/usr/bin/env bash
# Real mail and news servers end to end (issue 6): Postfix, Dovecot and INN from
# Debian's packages, started by this script as its own processes on loopback high
# ports, with configuration written here into a temporary directory and certificates
# from a test CA it makes. Nothing runs as a system service and nothing outside the
# temporary directory is changed; every server is stopped on exit, also on failure.
#
#   1. Postfix as the server: mailtls-client delivers over STARTTLS under verify and
#      may, and over implicit TLS (a wrapper-mode submission port); the messages land
#      in a virtual maildir.
#   2. Postfix as the client: it relays to mailtls-server with
#      smtp_tls_security_level = encrypt; its log line and mailtls-server's JSON line
#      must name the same TLS version and cipher.
#   3. Dovecot: mailtls-client logs in over IMAP STARTTLS, IMAPS, POP3 STLS and POP3S
#      and reads the maildir Postfix filled; a wrong certificate name fails under verify.
#   4. INN (nnrpd): NNTP STARTTLS and NNTPS, logged in, listing groups.
#   5. Recovery: a proxy (proxy.py) in front of Postfix resets ClientHellos above 1000
#      bytes: mailtls-client --memory recovers on first contact and uses one
#      connection on the next; a proxy that resets TLS 1.3 hellos in front of
#      TLS 1.3-capable Postfix is detected as a downgrade and nothing is delivered.
# Prints a table of peer, version, exchange and result, and the time it took.
# Run by `make test` (target real-servers); scripts/install-real-servers.sh installs
# the packages. Needs root (Postfix's master and INN's nnrpd drop privileges themselves).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CLIENT=$ROOT/build/bin/mailtls-client
SERVER=$ROOT/build/bin/mailtls-server
[ -x "$CLIENT" ] && [ -x "$SERVER" ] || { echo "real-servers: build/bin is missing: make examples" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "real-servers: needs root to start Postfix, Dovecot and INN as its own processes" >&2; exit 1; }
bash "$ROOT/scripts/install-real-servers.sh"
START=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-real-servers.XXXXXX")
chmod 755 "$TMP" # the servers' unprivileged users (postfix, nobody, news, dovenull) walk through it
PIDS=()
PF=$TMP/postfix DV=$TMP/dovecot INN=$TMP/inn
cleanup() {
  local st=$?
  [ -f "$PF/etc/main.cf" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  [ -f "$DV/run/master.pid" ] && kill "$(cat "$DV/run/master.pid")" 2>/dev/null || true
  for f in "$INN"/run/nnrpd-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # Postfix's master can take a moment to go; nothing of ours may outlive the test.
  for _ in $(seq 50); do pgrep -f "$TMP" >/dev/null || break; sleep 0.1; done
  pkill -9 -f "$TMP" 2>/dev/null || true
  [ $st = 0 ] || { echo "real-servers: logs follow" >&2; tail -n 30 "$PF/maillog" "$DV/log" 2>/dev/null >&2 || true; }
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "real-servers: kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit $st
}
trap cleanup EXIT
FAILED=0
ROWS=()
fail() { echo "real-servers: FAILED: $*" >&2; FAILED=1; }
row() { ROWS+=("$(printf '%-8s %-16s %-50s %s' "$1" "$2" "$3" "$4")"); }
field() { python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($1)"; }
# free ports, bound and released at once (the servers here cannot take port 0)
read -r P_SUB P_SMTPS P_IMAP P_IMAPS P_POP3 P_POP3S P_NNTP P_NNTPS < <(python3 -c "
import socket
s=[socket.socket() for _ in range(8)]
[x.bind(('127.0.0.1',0)) for x in s]
print(' '.join(str(x.getsockname()[1]) for x in s))")
# wait_port PORT: until something listens (30 s)
wait_port() {
  python3 - "$1" <<'PY' || { echo "real-servers: nothing listens on port $1" >&2; exit 1; }
import socket, sys, time
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

# ---- a test CA and a certificate for localhost ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.pem" \
  -days 2 -subj "/CN=mailtls real-servers test CA" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" -out "$TMP/req.pem" \
  -subj /CN=localhost >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TMP/ext.cnf"
openssl x509 -req -in "$TMP/req.pem" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial -days 2 \
  -extfile "$TMP/ext.cnf" -out "$TMP/cert.pem" >/dev/null 2>&1
chmod 644 "$TMP/cert.pem"
chmod 600 "$TMP/key.pem" # Postfix's and Dovecot's masters read it as root; INN gets its own copy

# ---- mailtls-server: the next hop Postfix relays to ----
mkdir -p "$TMP/mts"
"$SERVER" --listen 127.0.0.1:0 --hostname localhost --cert "$TMP/cert.pem" --key "$TMP/key.pem" \
  --maildir "$TMP/mts/md" --json-log --timeout 30 >"$TMP/mts/log.json" 2>"$TMP/mts/err" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/mts/log.json" ] && break; sleep 0.1; done
P_MTS=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$TMP/mts/log.json")
[ -n "$P_MTS" ] || { cat "$TMP/mts/err" >&2; exit 1; }

# ---- Postfix: its own config directory, queue and maildir ----
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$TMP/vmail"
chown postfix "$PF/data"
chown nobody:nogroup "$TMP/vmail"
printf 'bob@test.example bob/\n' >"$PF/etc/vmailbox"
printf 'relay.test smtp:[127.0.0.1]:%s\n' "$P_MTS" >"$PF/etc/transport"
sed -e "s|@PF@|$PF|g" -e "s|@TMP@|$TMP|g" "$ROOT/tests/real-servers/postfix-main.cf" >"$PF/etc/main.cf"
sed -e "s|@SUB@|$P_SUB|g" -e "s|@SMTPS@|$P_SMTPS|g" "$ROOT/tests/real-servers/postfix-master.cf" >"$PF/etc/master.cf"
postfix -c "$PF/etc" check
postfix -c "$PF/etc" start-fg >"$PF/fg.log" 2>&1 &
PIDS+=($!)
wait_port "$P_SUB"; wait_port "$P_SMTPS"
PF_VERSION=$(postconf -d mail_version | sed 's/.*= //')
OPENSSL_VERSION=$(openssl version | cut -d' ' -f2)

# deliver NAME ARGS...: mailtls-client delivers a message to ARGS' server; JSON in $TMP/NAME.json
deliver() {
  local name=$1; shift
  printf 'From: a@client.example\r\nTo: bob@test.example\r\nSubject: %s\r\nMessage-ID: <%s@client.example>\r\n\r\nhello from mailtls\r\n' \
    "$name" "$name" >"$TMP/$name.eml"
  "$CLIENT" --servername localhost --cafile "$TMP/ca.pem" --timeout 20 --from a@client.example --message "$TMP/$name.eml" \
    --json "$@" >"$TMP/$name.json" 2>"$TMP/$name.err"
}
# the messages of a maildir (Dovecot moves what it has seen from new/ to cur/)
maildir_count() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }
wait_count() { # DIR N: until DIR holds N files (30 s)
  for _ in $(seq 300); do [ "$(maildir_count "$1")" -ge "$2" ] && return 0; sleep 0.1; done
  return 1
}

# 1. Postfix as the server
n=0
for mode in verify may implicit; do
  args=(--policy "$mode" --to bob@test.example "127.0.0.1:$P_SUB")
  [ $mode = implicit ] && args=(--policy verify --implicit --to bob@test.example "127.0.0.1:$P_SMTPS")
  if deliver "pf-$mode" "${args[@]}"; then
    n=$((n+1))
    ver=$(field 'r["tls_version"]' <"$TMP/pf-$mode.json")
    wait_count "$TMP/vmail/bob" $n || fail "postfix $mode: the message did not reach the maildir"
    verified=$(field 'r["peer_cert"]["verified"] if r.get("peer_cert") else None' <"$TMP/pf-$mode.json" 2>/dev/null || echo '?')
    row postfix "$PF_VERSION" "mailtls-client -> smtpd, $mode$([ $mode = implicit ] && echo ' (wrapper mode)' || echo ' STARTTLS')" \
      "$ver, delivered to the maildir, cert verified: $verified"
  else
    fail "postfix $mode: $(tail -3 "$TMP/pf-$mode.err")"
  fi
done
grep -q "TLS connection established from localhost\[127.0.0.1\]: TLSv1.3" "$PF/maillog" || fail "postfix logged no inbound TLS 1.3"

# 2. Postfix as the client, relaying to mailtls-server under encrypt
if deliver pf-relay --policy may --to carol@relay.test "127.0.0.1:$P_SUB"; then
  if wait_count "$TMP/mts/md" 1; then
    pline=$(grep -m1 "TLS connection established to 127.0.0.1\[127.0.0.1\]:$P_MTS" "$PF/maillog" || true)
    pver=$(echo "$pline" | sed -n 's/.*: \(TLSv[0-9.]*\) with cipher \([A-Z0-9_-]*\).*/\1/p')
    pcipher=$(echo "$pline" | sed -n 's/.*: \(TLSv[0-9.]*\) with cipher \([A-Z0-9_-]*\).*/\2/p')
    mline=$(sed -n 2p "$TMP/mts/log.json")
    mver=$(echo "$mline" | field 'r["tls_version"]')
    mcipher=$(echo "$mline" | field 'r["cipher"]')
    # rustls says TLS13_AES_256_GCM_SHA384 where OpenSSL says TLS_AES_256_GCM_SHA384
    [ -n "$pver" ] && [ "$pver" = "$mver" ] && [ "$pcipher" = "${mcipher/TLS13_/TLS_}" ] ||
      fail "postfix relay: Postfix logged '$pver $pcipher', mailtls-server '$mver $mcipher'"
    row postfix "$PF_VERSION" "smtp client (encrypt) -> mailtls-server" "Postfix: $pver $pcipher; mailtls-server: $mver $mcipher"
  else
    fail "postfix relay: nothing reached mailtls-server's maildir"
  fi
else
  fail "postfix relay submission: $(tail -3 "$TMP/pf-relay.err")"
fi

# ---- Dovecot on the maildir Postfix filled ----
mkdir -p "$DV/run" "$DV/state"
printf 'bob:{PLAIN}s3cret\n' >"$DV/users"
sed -e "s|@DV@|$DV|g" -e "s|@TMP@|$TMP|g" -e "s|@IMAP@|$P_IMAP|g" -e "s|@IMAPS@|$P_IMAPS|g" -e "s|@POP3@|$P_POP3|g" \
  -e "s|@POP3S@|$P_POP3S|g" "$ROOT/tests/real-servers/dovecot.conf" >"$DV/dovecot.conf"
dovecot -c "$DV/dovecot.conf"
wait_port "$P_IMAP"; wait_port "$P_POP3S"
DV_VERSION=$(dovecot --version | cut -d' ' -f1)
for c in "imap $P_IMAP STARTTLS" "imap $P_IMAPS IMAPS" "pop3 $P_POP3 STLS" "pop3 $P_POP3S POP3S"; do
  set -- $c
  implicit=(); [ "$3" = IMAPS ] || [ "$3" = POP3S ] && implicit=(--implicit)
  if "$CLIENT" --proto "$1" "${implicit[@]}" --policy verify --cafile "$TMP/ca.pem" --servername localhost --timeout 20 \
    --user bob --pass s3cret --json "127.0.0.1:$2" >"$TMP/dv-$3.out" 2>"$TMP/dv-$3.err"; then
    found=$(grep -E '^(INBOX|maildrop) ' "$TMP/dv-$3.out" || true)
    echo "$found" | grep -qE '^(INBOX 3 messages|maildrop 3 messages)' || fail "dovecot $3: read '$found', expected 3 messages (from Postfix)"
    ver=$(tail -1 "$TMP/dv-$3.out" | field 'r["tls_version"]')
    row dovecot "$DV_VERSION" "mailtls-client $1, $3, login" "$ver, $found"
  else
    fail "dovecot $3: $(tail -3 "$TMP/dv-$3.err")"
  fi
done
if "$CLIENT" --proto imap --policy verify --cafile "$TMP/ca.pem" --servername wrong.example --timeout 20 \
  --user bob --pass s3cret --json "127.0.0.1:$P_IMAP" >"$TMP/dv-wrong.out" 2>"$TMP/dv-wrong.err"; then
  fail "dovecot: a certificate for localhost was accepted for wrong.example"
else
  reason=$(tail -1 "$TMP/dv-wrong.out" | field 'r["reason"]')
  grep -q "^logged in" "$TMP/dv-wrong.out" && fail "dovecot wrong name: logged in anyway"
  row dovecot "$DV_VERSION" "mailtls-client imap verify as wrong.example" "refused: $reason, no login sent"
fi

# ---- INN's nnrpd with a spool, STARTTLS and NNTPS ----
mkdir -p "$INN/etc" "$INN/db" "$INN/spool/articles/local/test" "$INN/spool/overview" "$INN/run" "$INN/log" "$INN/tmp"
cp -r /etc/news/. "$INN/etc/"
sed -e "s|@INN@|$INN|g" -e "s|@TMP@|$TMP|g" "$ROOT/tests/real-servers/inn.conf" >"$INN/etc/inn.conf"
sed -e "s|@INN@|$INN|g" "$ROOT/tests/real-servers/readers.conf" >"$INN/etc/readers.conf"
printf 'bob:%s\n' "$(openssl passwd -6 s3cret)" >"$INN/etc/passwd"
cp "$TMP/key.pem" "$INN/key.pem" # nnrpd refuses a key that others could read
printf 'local.test 0000000002 0000000001 y\nlocal.other 0000000000 0000000001 y\n' >"$INN/db/active"
printf 'local.test\tmailtls test group\nlocal.other\tanother group\n' >"$INN/db/newsgroups"
: >"$INN/db/active.times"
for i in 1 2; do
  printf 'Path: news.test!not-for-mail\nFrom: n@test.example\nNewsgroups: local.test\nSubject: news %s\nMessage-ID: <n%s@test.example>\nDate: Mon, 23 Nov 2026 08:00:00 +0000\n\nnews article %s\n' \
    $i $i $i >"$INN/spool/articles/local/test/$i"
done
chown -R news:news "$INN"
chmod 600 "$INN/key.pem"
su news -s /bin/sh -c "INNCONF='$INN/etc/inn.conf' /usr/lib/news/bin/makehistory -O -F" >"$INN/makehistory.log" 2>&1 ||
  { cat "$INN/makehistory.log" >&2; fail "inn: makehistory"; }
INNCONF=$INN/etc/inn.conf /usr/lib/news/bin/nnrpd -D -b 127.0.0.1 -p "$P_NNTP"
INNCONF=$INN/etc/inn.conf /usr/lib/news/bin/nnrpd -D -S -b 127.0.0.1 -p "$P_NNTPS"
wait_port "$P_NNTP"; wait_port "$P_NNTPS"
INN_VERSION=$(dpkg-query -W -f='${Version}' inn2)
for c in "$P_NNTP STARTTLS" "$P_NNTPS NNTPS"; do
  set -- $c
  implicit=(); [ "$2" = NNTPS ] && implicit=(--implicit)
  if "$CLIENT" --proto nntp "${implicit[@]}" --policy verify --cafile "$TMP/ca.pem" --servername localhost --timeout 20 \
    --user bob --pass s3cret --json "127.0.0.1:$1" >"$TMP/inn-$2.out" 2>"$TMP/inn-$2.err"; then
    grep -q '^group local.test articles 1-2' "$TMP/inn-$2.out" || fail "inn $2: groups listed: $(grep '^group' "$TMP/inn-$2.out")"
    grep -q '^logged in as bob' "$TMP/inn-$2.out" || fail "inn $2: no login"
    ver=$(tail -1 "$TMP/inn-$2.out" | field 'r["tls_version"]')
    row inn2 "$INN_VERSION" "mailtls-client nntp, $2, AUTHINFO, LIST ACTIVE" "$ver, $(grep -c '^group' "$TMP/inn-$2.out") groups"
  else
    fail "inn $2: $(tail -3 "$TMP/inn-$2.err")"
  fi
done

# ---- 5. Recovery with Postfix behind a misbehaving proxy ----
proxy() { # MODE: starts proxy.py in front of Postfix's STARTTLS port; sets PPORT, PLOG
  PLOG=$TMP/proxy-${1//:/-}.log
  python3 "$ROOT/tests/real-servers/proxy.py" "$P_SUB" "$1" >"$PLOG" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$PLOG" ] && break; sleep 0.1; done
  PPORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$PLOG")
  [ -n "$PPORT" ] || { cat "$PLOG" >&2; exit 1; }
}
MEM=$TMP/memory
attempts() { field '[(a["connection"], a["rung"]) for a in r["attempts"]]'; }
proxy reset-above:1000
if deliver rec-first --policy verify --memory "$MEM" --to bob@test.example "127.0.0.1:$PPORT"; then
  a1=$(attempts <"$TMP/rec-first.json")
  [ "$a1" = "[(1, 'modern'), (2, 'compact')]" ] || fail "recovery first contact: $a1"
  deliver rec-next --policy verify --memory "$MEM" --to bob@test.example "127.0.0.1:$PPORT" || fail "recovery next contact: $(tail -3 "$TMP/rec-next.err")"
  a2=$(attempts <"$TMP/rec-next.json")
  [ "$a2" = "[(1, 'compact')]" ] || fail "recovery next contact: $a2"
  wait_count "$TMP/vmail/bob" 5 || fail "recovery: the two messages did not reach the maildir"
  row postfix "$PF_VERSION" "behind a proxy resetting hellos > 1000 bytes" "first contact $a1, next $a2"
else
  fail "recovery first contact: $(tail -3 "$TMP/rec-first.err")"
fi
proxy reset-tls13
before=$(maildir_count "$TMP/vmail/bob")
if deliver rec-downgrade --policy encrypt --memory "$MEM" --to bob@test.example "127.0.0.1:$PPORT"; then
  fail "downgrade: a TLS 1.3-filtering proxy in front of TLS 1.3 Postfix was accepted"
else
  outcome=$(field 'r["outcome"] + " " + r["reason"]' <"$TMP/rec-downgrade.json")
  [ "$outcome" = "defer downgrade-detected" ] || fail "downgrade: outcome $outcome"
  sleep 1
  [ "$(maildir_count "$TMP/vmail/bob")" = "$before" ] || fail "downgrade: a message was delivered"
  row postfix "$PF_VERSION" "behind a proxy resetting TLS 1.3 hellos" "$outcome after $(attempts <"$TMP/rec-downgrade.json" | tr -d "'")"
fi

END=$(date +%s)
echo
echo "real servers on loopback (OpenSSL $OPENSSL_VERSION on their side; test CA, certificate for localhost)"
printf '%-8s %-16s %-50s %s\n' peer version exchange result
printf '%s\n' "${ROWS[@]}"
echo "real-servers: $((END - START)) s for the real-peer part (after the packages were installed)"
[ $FAILED = 0 ] || { echo "real-servers: some checks failed" >&2; exit 1; }
echo "real-servers: all passed"
