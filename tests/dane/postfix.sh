#!/usr/bin/env bash
# Postfix as a DANE client (RFC 7672) against mailtls-server, in a network namespace
# of the test's own whose /etc/resolv.conf is our validating Unbound (dns.sh):
# smtp_tls_security_level = dane-only, smtp_dns_support_level = dnssec, and mail for
# three domains routed to [host]:PORT, each host an A record for mailtls-server:
#   good.test  -> [mx1.sec.test]:PORT, TLSA 3 1 1 of the server's key at _PORT._tcp:
#                 Postfix logs "Verified TLS connection established" and the message
#                 lands in mailtls-server's maildir
#   wrong.test -> [mx2.sec.test]:PORT, TLSA 3 1 1 of another key: deferred, nothing
#                 delivered
#   ins.test   -> [mx.ins.test]:PORT, an insecure zone (TLSA published, unsigned):
#                 deferred under dane-only, nothing delivered
# which also shows that Postfix looks up TLSA at _PORT._tcp.HOST for [HOST]:PORT.
# The other direction: mailtls-client at dane-only looks sec.test up (--dns: MX
# pf.sec.test, TLSA at _SMTPD._tcp.pf.sec.test) and delivers to Postfix's smtpd,
# verified; with the TLSA record of another key it defers and sends no message.
# Skips (exit 0, with a message) when Postfix is not installed; make test installs it
# (scripts/install-real-servers.sh) before this runs. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SERVER=$ROOT/build/bin/mailtls-server
[ -x "$SERVER" ] || { echo "dane-postfix: $SERVER is missing: make examples" >&2; exit 1; }
if ! command -v postfix >/dev/null 2>&1 && [ ! -x /usr/sbin/postfix ]; then
  echo "dane-postfix: SKIPPED: Postfix is not installed (scripts/install-real-servers.sh installs it)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "dane-postfix: needs root (Postfix's master, the network namespace)" >&2; exit 1; }
source "$ROOT/tests/dane/dns.sh"
source "$ROOT/tests/dane/pki.sh"
dns_enter_netns "$@"
[ "${MAILTLS_DNS_NETNS:-}" = inside ] ||
  { echo "dane-postfix: needs a network namespace (Postfix reads /etc/resolv.conf)" >&2; exit 1; }
START=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-dane-postfix.XXXXXX")
chmod 755 "$TMP"
PF=$TMP/postfix
PIDS=()
cleanup() {
  local st=$?
  if [ -f "$PF/etc/main.cf" ] && [ -f "$PF/queue/pid/master.pid" ]; then
    postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  dns_stop
  [ $st = 0 ] || { echo "dane-postfix: Postfix's log follows" >&2; tail -n 30 "$PF/maillog" >&2 2>/dev/null || true; }
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "dane-postfix: kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit $st
}
trap cleanup EXIT
FAILED=0
fail() { echo "dane-postfix: FAILED: $*" >&2; FAILED=1; }

pki_init "$TMP/pki"
pki_leaf server mx1.sec.test self
pki_leaf other mx2.sec.test self
pki_leaf smtpd pf.sec.test self
chmod 600 "$PKI_DIR/smtpd.key"
read -r SMTPD < <(python3 -c "
import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")

# ---- mailtls-server: its port goes into the TLSA owner names ----
mkdir -p "$TMP/mts/md"
"$SERVER" --listen 127.0.0.1:0 --hostname mx1.sec.test --cert "$PKI_DIR/server.pem" --key "$PKI_DIR/server.key" \
  --maildir "$TMP/mts/md" --json-log --timeout 30 >"$TMP/mts/log.json" 2>"$TMP/mts/err" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/mts/log.json" ] && break; sleep 0.1; done
PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$TMP/mts/log.json")
[ -n "$PORT" ] || { echo "dane-postfix: mailtls-server did not start: $(cat "$TMP/mts/err")" >&2; exit 1; }

# ---- the DNS ----
dns_init "$TMP/dns"
dns_zone sec.test secure
dns_zone ins.test insecure
dns_host sec.test mx1.sec.test
dns_host sec.test mx2.sec.test
dns_host ins.test mx.ins.test
dns_host sec.test pf.sec.test
dns_mx sec.test 10 pf.sec.test
dns_tlsa sec.test pf.sec.test "$SMTPD" "$(tlsa_rdata 3 1 1 "$PKI_DIR/smtpd.pem")"
dns_tlsa sec.test mx1.sec.test "$PORT" "$(tlsa_rdata 3 1 1 "$PKI_DIR/server.pem")"
dns_tlsa sec.test mx2.sec.test "$PORT" "$(tlsa_rdata 3 1 1 "$PKI_DIR/other.pem")"
dns_tlsa ins.test mx.ins.test "$PORT" "$(tlsa_rdata 3 1 1 "$PKI_DIR/server.pem")"
dns_start
[ "$DNS_SYSTEM_RESOLVER" = 1 ] || { echo "dane-postfix: the system resolver is not ours" >&2; exit 1; }

# ---- Postfix: its own configuration, queue and log; nothing chrooted ----
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$TMP/vmail"
chown postfix "$PF/data"
chown nobody:nogroup "$TMP/vmail"
printf 'bob@sec.test bob/\n' >"$PF/etc/vmailbox"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = client.sec.test
mydomain = sec.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
alias_maps =
alias_database =
biff = no
# DANE: the resolver (/etc/resolv.conf, trust-ad) validates, Postfix trusts its AD bit
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane-only
smtp_tls_loglevel = 1
dnssec_probe = ns:sec.test
transport_maps = texthash:$PF/etc/transport
# inbound (client_to_postfix): STARTTLS with the certificate of pf.sec.test's TLSA
smtpd_tls_cert_file = $PKI_DIR/smtpd.pem
smtpd_tls_key_file = $PKI_DIR/smtpd.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = sec.test
virtual_mailbox_base = $TMP/vmail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
# a refused delivery stays deferred, retried later: the test looks at the first try
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
EOF
printf 'good.test smtp:[mx1.sec.test]:%s\nwrong.test smtp:[mx2.sec.test]:%s\nins.test smtp:[mx.ins.test]:%s\n' \
  "$PORT" "$PORT" "$PORT" >"$PF/etc/transport"
cat >"$PF/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
$SMTPD     inet  n       -       n       -       -       smtpd
virtual    unix  -       n       n       -       -       virtual
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
smtp       unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
postfix -c "$PF/etc" check
postfix -c "$PF/etc" start >/dev/null
PF_VERSION=$(postconf -d mail_version | sed 's/.*= //')

# submit DOMAIN: a message to bob@DOMAIN through Postfix's sendmail
submit() {
  printf 'From: a@client.sec.test\nTo: bob@%s\nSubject: dane %s\nMessage-ID: <%s@client.sec.test>\n\nhello over DANE\n' \
    "$1" "$1" "$1" | sendmail -C "$PF/etc" -f a@client.sec.test "bob@$1"
}
# wait_log REGEX: until Postfix's log has a line matching REGEX (30 s)
wait_log() {
  for _ in $(seq 300); do
    if [ -f "$PF/maillog" ] && grep -Eq -- "$1" "$PF/maillog"; then return 0; fi
    sleep 0.1
  done
  return 1
}
delivered() { find "$TMP/mts/md/new" -type f 2>/dev/null | wc -l; }

submit good.test
submit wrong.test
submit ins.test

# good.test: verified by its TLSA record, delivered
if wait_log "to=<bob@good\.test>.*status=sent"; then
  grep -Eq "Verified TLS connection established to mx1\.sec\.test\[127\.0\.0\.1\]:$PORT" "$PF/maillog" ||
    fail "good.test: sent, but Postfix logged no verified TLS connection to mx1.sec.test:$PORT"
  grep -rlq "Subject: dane good.test" "$TMP/mts/md/new" 2>/dev/null ||
    fail "good.test: Postfix says sent, mailtls-server's maildir has no such message"
else
  fail "good.test: not delivered: $(grep 'bob@good.test' "$PF/maillog" | tail -n 2)"
fi
# wrong.test and ins.test: deferred, never sent
for d in wrong.test ins.test; do
  if wait_log "to=<bob@${d/./\\.}>.*status=deferred"; then
    :
  else
    fail "$d: no deferral logged"
  fi
  if grep -Eq "to=<bob@${d/./\\.}>.*status=sent" "$PF/maillog"; then fail "$d: Postfix delivered it"; fi
done
grep -rlq "Subject: dane wrong.test\|Subject: dane ins.test" "$TMP/mts/md/new" 2>/dev/null &&
  fail "a message that should have been deferred reached mailtls-server's maildir"
[ "$(delivered)" = 1 ] || fail "mailtls-server's maildir holds $(delivered) messages, expected 1"
why_wrong=$(sed -n 's/.*to=<bob@wrong\.test>.*status=deferred (\(.*\))$/\1/p' "$PF/maillog" | head -n 1)
why_ins=$(sed -n 's/.*to=<bob@ins\.test>.*status=deferred (\(.*\))$/\1/p' "$PF/maillog" | head -n 1)
# the mismatch must be a certificate verification failure, not a connection problem
case "$why_wrong" in *"ertificate"*|*"TLSA"*|*"verif"*) ;; *) fail "wrong.test deferred for another reason: $why_wrong" ;; esac

# client_to_postfix: mailtls-client as the DANE client. It looks up sec.test as an
# MTA would (mailtls-dnslookup: MX pf.sec.test, its A and its TLSA at _SMTPD._tcp),
# delivers to Postfix's smtpd under dane-only with those records, which must verify
# and land in the maildir; with the TLSA record of another key it must defer (exit
# 75) without sending the message. Expects mailtls-client's DANE flags (issue 17).
client_to_postfix() {
  local client=$ROOT/build/bin/mailtls-client lookup=$ROOT/build/bin/mailtls-dnslookup out st
  out=$("$lookup" --dns "$DNS_RESOLVER" --dns-anchor "$DNS_ANCHOR" --port "$SMTPD" --tlsa-file "$TMP/pf.tlsa" sec.test) ||
    { fail "client: mailtls-dnslookup sec.test: $out"; return 0; }
  local mx addr tlsa_base dnssec
  mx=$(sed -n 's/^mx-host //p' <<<"$out"); addr=$(sed -n 's/^address //p' <<<"$out")
  tlsa_base=$(sed -n 's/^tlsa-base //p' <<<"$out"); dnssec=$(sed -n 's/^dnssec //p' <<<"$out")
  [ "$mx" = pf.sec.test ] && [ "$dnssec" = secure ] && [ -s "$TMP/pf.tlsa" ] ||
    { fail "client: the lookup found mx-host '$mx', dnssec '$dnssec'"; return 0; }
  printf 'From: a@client.sec.test\r\nTo: bob@sec.test\r\nSubject: dane client\r\n\r\nhello\r\n' >"$TMP/client.eml"
  # As an MTA: the client looks sec.test up itself (--dns, libunbound) and hands the
  # MX, its TLSA records and their DNSSEC status to the library.
  st=0
  "$client" --policy dane-only --dns "$DNS_RESOLVER" --dns-anchor "$DNS_ANCHOR" \
    --timeout 20 --from a@client.sec.test --to bob@sec.test --message "$TMP/client.eml" --json \
    "sec.test:$SMTPD" >"$TMP/client.json" 2>"$TMP/client.err" || st=$?
  [ $st = 0 ] || { fail "client: mailtls-client dane-only exited $st: $(tail -n 3 "$TMP/client.err")"; return 0; }
  grep -q '"policy":"dane-only"' "$TMP/client.json" && grep -q '"verified":true' "$TMP/client.json" ||
    fail "client: not verified under dane-only: $(cat "$TMP/client.json")"
  for _ in $(seq 300); do [ -n "$(find "$TMP/vmail/bob/new" -type f 2>/dev/null)" ] && break; sleep 0.1; done
  [ -n "$(find "$TMP/vmail/bob/new" -type f 2>/dev/null)" ] || fail "client: nothing reached Postfix's maildir"
  # the TLSA record of another key: deferred, and no message
  tlsa_rdata 3 1 1 "$PKI_DIR/other.pem" >"$TMP/wrong.tlsa"
  st=0
  "$client" --policy dane-only --tlsa "$TMP/wrong.tlsa" --dnssec secure --mx-host "$mx" --tlsa-base "$tlsa_base" \
    --timeout 20 --from a@client.sec.test --to bob@sec.test --message "$TMP/client.eml" --json \
    "$addr:$SMTPD" >"$TMP/client-wrong.json" 2>"$TMP/client-wrong.err" || st=$?
  [ $st = 75 ] || fail "client: a TLSA record of another key gave exit $st, expected 75 (defer)"
  [ "$(find "$TMP/vmail/bob/new" -type f | wc -l)" = 1 ] || fail "client: the message under a wrong TLSA record was delivered"
}
client_to_postfix
[ $FAILED = 0 ] && echo "dane-postfix: mailtls-client dane-only -> Postfix smtpd: verified and delivered; wrong TLSA deferred"

[ $FAILED = 0 ] || exit 1
echo "dane-postfix: Postfix $PF_VERSION dane-only: [mx1.sec.test]:$PORT verified by TLSA 3 1 1 and delivered;"
echo "dane-postfix:   wrong TLSA deferred ($why_wrong)"
echo "dane-postfix:   insecure zone deferred ($why_ins); $(( $(date +%s) - START )) s"
