#!/usr/bin/env bash
# The DANE tests' DNS, proved on its own (make dane-dns-test): in a network namespace
# of its own, dns.sh builds a test. hierarchy with a secure, an insecure and a bogus
# zone holding MX, A, CNAME and TLSA records for certificates pki.sh makes, NSD serves
# it, Unbound validates it, and mailtls-dnslookup (examples-c/dns-lookup.c on
# libunbound) must print exactly the destination each domain has: the lowest MX, the
# implicit MX, a CNAME-expanded TLSA base, the TLSA records, and secure, insecure or
# bogus with the reason. tlsa_rdata is checked against ldns-dane, and the system
# resolver inside the namespace (getent, dig) must be our Unbound.
# Needs root for the namespace (without it: free ports, and the system resolver part
# is skipped). scripts/install-deps.sh installs NSD, ldns, Unbound and libunbound.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOOKUP=$ROOT/build/bin/mailtls-dnslookup
[ -x "$LOOKUP" ] || { echo "dane-dns: $LOOKUP is missing: make examples" >&2; exit 1; }
source "$ROOT/tests/dane/dns.sh"
source "$ROOT/tests/dane/pki.sh"
dns_enter_netns "$@"
START=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-dane-dns.XXXXXX")
cleanup() {
  local st=$?
  dns_stop
  [ $st = 0 ] || { echo "dane-dns: Unbound's log follows" >&2; tail -n 20 "$TMP/dns/unbound.log" >&2 2>/dev/null || true; }
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "dane-dns: kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit $st
}
trap cleanup EXIT
FAILED=0
CHECKS=0
fail() { echo "dane-dns: FAILED: $*" >&2; FAILED=1; }

# ---- certificates: what the DANE cases will present ----
pki_init "$TMP/pki"
pki_leaf ee mx1.sec.test self
pki_ca root
pki_ca inter root
pki_leaf chained mx1.sec.test inter
pki_leaf expired mx1.sec.test root "-10 days" "-5 days"
pki_leaf wrongname other.sec.test root
P=$TMP/pki

# tlsa_rdata agrees with ldns-dane, an implementation of its own, for every selector
# and matching type of a DANE-EE record
for sm in "0 0" "0 1" "0 2" "1 0" "1 1" "1 2"; do
  set -- $sm
  ours=$(tlsa_rdata 3 "$1" "$2" "$P/ee.pem")
  theirs=$(ldns-dane -c "$P/ee.pem" create mx1.sec.test 25 3 "$1" "$2" | awk '{print $5, $6, $7, $8}')
  CHECKS=$((CHECKS+1))
  [ "$ours" = "$theirs" ] || fail "tlsa_rdata 3 $1 $2: '$ours', ldns-dane: '$theirs'"
done

T_EE=$(tlsa_rdata 3 1 1 "$P/ee.pem")
T_ROOT=$(tlsa_rdata 2 0 1 "$P/root.pem")
T_INTER=$(tlsa_rdata 2 1 1 "$P/inter.pem")
T_EXPIRED=$(tlsa_rdata 3 0 1 "$P/expired.pem")
T_WRONG=$(tlsa_rdata 3 1 2 "$P/wrongname.pem")
T_FULL=$(tlsa_rdata 3 0 0 "$P/chained.pem")

# ---- the hierarchy ----
dns_init "$TMP/dns"
dns_zone sec.test secure
dns_zone ins.test insecure
dns_zone bog.test bogus
# sec.test: two MX hosts, the lower preference listed second
dns_mx sec.test 20 mx2.sec.test
dns_mx sec.test 10 mx1.sec.test
dns_host sec.test mx1.sec.test
dns_host sec.test mx2.sec.test 127.0.0.2
for t in "$T_EE" "$T_ROOT" "$T_INTER" "$T_EXPIRED" "$T_WRONG" "$T_FULL"; do dns_tlsa sec.test mx1.sec.test 25 "$t"; done
# no MX: the domain is its own MX host (RFC 5321 5.1)
dns_host sec.test nomx.sec.test
dns_tlsa sec.test nomx.sec.test 25 "$T_EE"
# an MX host that is a CNAME: the TLSA base is the target (RFC 7672 2.2.2)
dns_record sec.test "alias 300 MX 10 cname.sec.test."
dns_record sec.test "cname 300 CNAME mx1.sec.test."
# an MX target that is no host name (a space in a label) below a good one
dns_record sec.test 'junk 300 MX 5 bad\032name.sec.test.'
dns_record sec.test "junk 300 MX 10 mx2.sec.test."
dns_record sec.test 'bad\032name 300 A 127.0.0.1'
dns_record sec.test "nullmx 300 MX 0 ."
# secure MX records pointing into the insecure and the bogus zone
dns_record sec.test "toins 300 MX 10 mx.ins.test."
dns_record sec.test "tobog 300 MX 10 mx.bog.test."
# secure MX and A, the TLSA RRset a CNAME into the bogus zone
dns_record sec.test "badtlsa 300 MX 10 mx3.sec.test."
dns_host sec.test mx3.sec.test
dns_record sec.test "_25._tcp.mx3 300 CNAME _25._tcp.mx.bog.test."
for z in ins.test bog.test; do
  dns_mx $z 10 mx.$z
  dns_host $z mx.$z
  dns_tlsa $z mx.$z 25 "$T_EE"
done
dns_start

# expect NAME RC WHY-REGEX DOMAIN [OPTIONS...]: mailtls-dnslookup DOMAIN exits RC and
# prints exactly the lines on stdin (in any order: a resolver may rotate RRsets) and a
# why line matching WHY-REGEX ("" for none).
expect() {
  local name=$1 rc=$2 why=$3 domain=$4 out got_rc=0 want got gotwhy
  shift 4
  want=$(sort)
  out=$("$LOOKUP" --dns "$DNS_RESOLVER" --dns-anchor "$DNS_ANCHOR" --tlsa-file "$TMP/$name.tlsa" "$@" "$domain" \
    2>"$TMP/$name.err") || got_rc=$?
  got=$(grep -v '^why ' <<<"$out" | sort || true)
  gotwhy=$(sed -n 's/^why //p' <<<"$out")
  CHECKS=$((CHECKS+1))
  [ "$got_rc" = "$rc" ] || { fail "$name: exit $got_rc, expected $rc: $(cat "$TMP/$name.err")"; return 0; }
  if [ "$got" != "$want" ]; then
    fail "$name: mailtls-dnslookup $domain printed"$'\n'"$got"$'\n'"expected"$'\n'"$want"
  fi
  if [ -z "$why" ]; then
    [ -z "$gotwhy" ] || fail "$name: unexpected why: $gotwhy"
  else
    grep -Eq -- "$why" <<<"$gotwhy" || fail "$name: why '$gotwhy' does not match '$why'"
  fi
  # the TLSA file holds the tlsa lines, without their keyword
  if [ "$rc" = 0 ]; then
    [ "$(sort "$TMP/$name.tlsa")" = "$(sed -n 's/^tlsa //p' <<<"$got")" ] ||
      fail "$name: --tlsa-file holds '$(cat "$TMP/$name.tlsa")'"
  fi
}

expect secure-lowest-mx 0 "" sec.test <<EOF
next-hop sec.test
mx-host mx1.sec.test
address 127.0.0.1
tlsa-base mx1.sec.test
dnssec secure
tlsa $T_EE
tlsa $T_ROOT
tlsa $T_INTER
tlsa $T_EXPIRED
tlsa $T_WRONG
tlsa $T_FULL
EOF
expect secure-no-tlsa 0 "" sec.test --port 587 <<EOF
next-hop sec.test
mx-host mx1.sec.test
address 127.0.0.1
tlsa-base mx1.sec.test
dnssec secure
EOF
expect implicit-mx 0 "" NoMX.Sec.Test. <<EOF
next-hop nomx.sec.test
mx-host nomx.sec.test
address 127.0.0.1
tlsa-base nomx.sec.test
dnssec secure
tlsa $T_EE
EOF
expect cname-base 0 "" alias.sec.test <<EOF
next-hop alias.sec.test
mx-host cname.sec.test
address 127.0.0.1
tlsa-base mx1.sec.test
dnssec secure
tlsa $T_EE
tlsa $T_ROOT
tlsa $T_INTER
tlsa $T_EXPIRED
tlsa $T_WRONG
tlsa $T_FULL
EOF
expect bad-mx-name-skipped 0 "" junk.sec.test <<EOF
next-hop junk.sec.test
mx-host mx2.sec.test
address 127.0.0.2
tlsa-base mx2.sec.test
dnssec secure
EOF
expect insecure-zone 0 "" ins.test <<EOF
next-hop ins.test
mx-host mx.ins.test
address 127.0.0.1
tlsa-base 
dnssec insecure
EOF
expect insecure-mx-host 0 "" toins.sec.test <<EOF
next-hop toins.sec.test
mx-host mx.ins.test
address 127.0.0.1
tlsa-base 
dnssec insecure
EOF
expect bogus-zone 0 "^MX lookup for bog\.test is bogus: .*expired" bog.test <<EOF
next-hop bog.test
mx-host 
address 
tlsa-base 
dnssec bogus
EOF
expect bogus-mx-host 0 "^A lookup for mx\.bog\.test is bogus: .*expired" tobog.sec.test <<EOF
next-hop tobog.sec.test
mx-host mx.bog.test
address 
tlsa-base 
dnssec bogus
EOF
expect bogus-tlsa 0 "^TLSA lookup for _25\._tcp\.mx3\.sec\.test is bogus: .*expired" badtlsa.sec.test <<EOF
next-hop badtlsa.sec.test
mx-host mx3.sec.test
address 127.0.0.1
tlsa-base 
dnssec bogus
EOF
expect null-mx 75 "null MX" nullmx.sec.test </dev/null
expect nxdomain 75 "NXDOMAIN" nothere.sec.test </dev/null
# the verdict is libunbound's own: without the anchor nothing is secure, with a
# trust anchor for another key everything is bogus, whatever the resolver says
expect no-anchor 0 "" sec.test --dns-anchor /dev/null <<EOF
next-hop sec.test
mx-host mx1.sec.test
address 127.0.0.1
tlsa-base 
dnssec insecure
EOF
mkdir -p "$TMP/otherkey"
other=$(cd "$TMP/otherkey" && ldns-keygen -a ECDSAP256SHA256 -k test.)
ldns-key2ds -n -2 "$TMP/otherkey/$other.key" >"$TMP/otherkey/test.ds"
expect wrong-anchor 0 "^MX lookup for sec\.test is bogus" sec.test --dns-anchor "$TMP/otherkey/test.ds" <<EOF
next-hop sec.test
mx-host 
address 
tlsa-base 
dnssec bogus
EOF

# the system resolver of the namespace is our Unbound, and its AD bit is passed on
if [ "$DNS_SYSTEM_RESOLVER" = 1 ]; then
  CHECKS=$((CHECKS+2))
  got=$(getent hosts mx2.sec.test || true)
  [ "$got" = "127.0.0.2       mx2.sec.test" ] || fail "getent hosts mx2.sec.test: '$got'"
  got=$(dig +dnssec mx1.sec.test A 2>&1 || true)
  case "$got" in *"flags: qr rd ra ad;"*"mx1.sec.test."*"127.0.0.1"*) ;; *) fail "dig mx1.sec.test (system resolver): $got" ;; esac
else
  echo "dane-dns: no namespace: the system resolver checks are skipped"
fi

[ $FAILED = 0 ] || exit 1
echo "dane-dns: $CHECKS checks passed in $(( $(date +%s) - START )) s (NSD $(nsd -v 2>&1 | sed -n '1s/.*version //p'), Unbound $(unbound -V | sed -n '1s/Version //p'), namespace: ${MAILTLS_DNS_NETNS:-?})"
