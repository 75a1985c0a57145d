#!/usr/bin/env bash
# DANE (RFC 7672), MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) end to end, through real
# DNSSEC: NSD serves a signed hierarchy, Unbound validates it (dns.sh), mailtls-client
# looks the destination up with libunbound (--dns: MX, address, TLSA and their DNSSEC
# status) and hands the answers to the library, which decides; mailtls-server instances
# with the certificates of each case receive the mail. Every case delivers one message
# or must not; each session's TLS-RPT record goes to one directory, and mailtls-tlsrpt
# makes the RFC 8460 report of them, validated against our schema of RFC 8460 section
# 4.4 (tests/tlsrpt/). Prints the table of cases: outcome and RFC 8460 result type.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/build/bin
for p in mailtls-server mailtls-client mailtls-tlsrpt; do
  [ -x "$BIN/$p" ] || { echo "dane-test: $BIN/$p is missing: make examples" >&2; exit 1; }
done
source "$ROOT/tests/dane/dns.sh"
source "$ROOT/tests/dane/pki.sh"
dns_enter_netns "$@"
START=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-dane-cases.XXXXXX")
PIDS=()
cleanup() {
  local st=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  dns_stop
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "dane-test: kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit $st
}
trap cleanup EXIT
FAILED=0
fail() { echo "dane-test: FAILED: $*" >&2; FAILED=1; }

# ---- certificates ----
pki_init "$TMP/pki"
pki_leaf ee mx-ee.sec.test self
pki_leaf other mx-ee.sec.test self
pki_leaf expired mx-exp.sec.test self "-10 days" "-5 days"
pki_leaf wrongname somewhere.else.test self
pki_ca root
pki_ca inter root
pki_leaf chained mx-ta.sec.test inter
cat "$PKI_DIR/chained.pem" "$PKI_DIR/inter.pem" >"$PKI_DIR/chained.noroot.pem"
pki_ca webroot
pki_leaf web mx.sts.test webroot
pki_leaf webbad mx.sts.test self

# ---- servers: one per certificate; their ports go into the TLSA owner names ----
declare -A PORT MD
serve() { # NAME CERTCHAIN KEY HOSTNAME
  local name=$1 dir=$TMP/srv-$1
  mkdir -p "$dir/md"
  "$BIN/mailtls-server" --listen 127.0.0.1:0 --hostname "$4" --cert "$2" --key "$3" --maildir "$dir/md" \
    --json-log --timeout 30 >"$dir/log.json" 2>"$dir/err" &
  PIDS+=($!)
  for _ in $(seq 200); do [ -s "$dir/err" ] && grep -q listening "$dir/err" && break; sleep 0.05; done
  PORT[$name]=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$dir/err" | head -n 1)
  [ -n "${PORT[$name]}" ] || { echo "dane-test: server $name did not start: $(cat "$dir/err")" >&2; exit 1; }
  MD[$name]=$dir/md
}
serve ee "$PKI_DIR/ee.pem" "$PKI_DIR/ee.key" mx-ee.sec.test
serve expired "$PKI_DIR/expired.pem" "$PKI_DIR/expired.key" mx-exp.sec.test
serve wrongname "$PKI_DIR/wrongname.pem" "$PKI_DIR/wrongname.key" mx-name.sec.test
serve ta "$PKI_DIR/chained.chain.pem" "$PKI_DIR/chained.key" mx-ta.sec.test
serve tanoroot "$PKI_DIR/chained.noroot.pem" "$PKI_DIR/chained.key" mx-ta.sec.test
serve web "$PKI_DIR/web.chain.pem" "$PKI_DIR/web.key" mx.sts.test
serve webbad "$PKI_DIR/webbad.pem" "$PKI_DIR/webbad.key" mx.sts.test

# ---- the DNS: one next-hop domain per case, each with its MX ----
dns_init "$TMP/dns"
dns_zone sec.test secure
dns_zone ins.test insecure
dns_zone bog.test bogus
dns_zone sts.test insecure
# case DOMAIN ZONE MXHOST SERVER [TLSA-RDATA...]: the next-hop DOMAIN (a name in ZONE)
# has MXHOST, an A record 127.0.0.1, and the TLSA records at _PORT._tcp.MXHOST.
declare -A HOSTS
mxcase() {
  local domain=$1 zone=$2 mx=$3 port=${PORT[$4]}
  shift 4
  dns_record "$zone" "${domain}. 300 MX 10 ${mx}."
  [ -n "${HOSTS[$mx]:-}" ] || dns_host "$zone" "$mx"
  HOSTS[$mx]=1
  for r in "$@"; do dns_tlsa "$zone" "$mx" "$port" "$r"; done
}
EE=$(tlsa_rdata 3 1 1 "$PKI_DIR/ee.pem")
mxcase ee-match.sec.test sec.test mx-ee.sec.test ee "$EE"
mxcase ee-full.sec.test sec.test mx-ee2.sec.test ee "$(tlsa_rdata 3 0 2 "$PKI_DIR/ee.pem")"
mxcase ee-mismatch.sec.test sec.test mx-ee3.sec.test ee "$(tlsa_rdata 3 1 1 "$PKI_DIR/other.pem")"
mxcase ee-expired.sec.test sec.test mx-exp.sec.test expired "$(tlsa_rdata 3 1 1 "$PKI_DIR/expired.pem")"
mxcase ee-name.sec.test sec.test mx-name.sec.test wrongname "$(tlsa_rdata 3 1 1 "$PKI_DIR/wrongname.pem")"
mxcase ta-chain.sec.test sec.test mx-ta.sec.test ta "$(tlsa_rdata 2 1 1 "$PKI_DIR/inter.pem")"
mxcase ta-unsent.sec.test sec.test mx-ta.sec.test tanoroot "$(tlsa_rdata 2 0 0 "$PKI_DIR/root.pem")"
mxcase pkix-only.sec.test sec.test mx-ee4.sec.test ee "$(tlsa_rdata 1 1 1 "$PKI_DIR/ee.pem")" \
  "$(tlsa_rdata 0 0 1 "$PKI_DIR/root.pem")"
mxcase insecure.ins.test ins.test mx.ins.test ee "$EE"
mxcase bogus.bog.test bog.test mx.bog.test ee "$EE"
mxcase sts-enforce.sts.test sts.test mx.sts.test web
mxcase sts-outside.sts.test sts.test mx.elsewhere.sts.test web
mxcase sts-testing.sts.test sts.test mx2.sts.test webbad
mxcase both.sec.test sec.test mx-both.sec.test ee "$EE"
dns_start

# ---- MTA-STS policies, as the MTA would have fetched them ----
printf 'version: STSv1\r\nmode: enforce\r\nmx: *.sts.test\r\nmax_age: 86400\r\n' >"$TMP/enforce.txt"
printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n' >"$TMP/enforce-one.txt"
printf 'version: STSv1\r\nmode: testing\r\nmx: *.sts.test\r\nmax_age: 86400\r\n' >"$TMP/testing.txt"
printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.nowhere.test\r\nmax_age: 86400\r\n' >"$TMP/elsewhere.txt"

printf 'From: a@client.test\r\nTo: b@dest.test\r\nSubject: dane case\r\n\r\nhello\r\n' >"$TMP/msg.eml"
RPT=$TMP/tlsrpt
mkdir -p "$RPT"
ROWS=()
# run NAME SERVER POLICY EXPECT(delivered|deferred) EXPECT_TYPE(-|result type) DOMAIN [OPTIONS...]
run() {
  local name=$1 server=$2 policy=$3 expect=$4 etype=$5 domain=$6
  shift 6
  local before after st=0 json
  before=$(find "${MD[$server]}/new" -type f 2>/dev/null | wc -l)
  "$BIN/mailtls-client" --policy "$policy" --dns "$DNS_RESOLVER" --dns-anchor "$DNS_ANCHOR" --cafile "$PKI_DIR/webroot.pem" \
    --timeout 20 --from a@client.test --to b@dest.test --message "$TMP/msg.eml" --tlsrpt-dir "$RPT" --json "$@" \
    "$domain:${PORT[$server]}" >"$TMP/$name.json" 2>"$TMP/$name.err" || st=$?
  after=$(find "${MD[$server]}/new" -type f 2>/dev/null | wc -l)
  json=$(tail -n 1 "$TMP/$name.json")
  local outcome reason rfc pol
  read -r outcome reason rfc pol < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["outcome"], r["reason"], r["rfc8460"] or "-", r.get("policy") or "-")' "$json" 2>/dev/null || echo "? ? ? ?")
  # The session's TLS-RPT result type: the newest record file's.
  local rec rtype
  rec=$(ls -t "$RPT"/*.tlsrpt 2>/dev/null | head -n 1)
  rtype=$(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(r.get("result-type", "-") if r["result"] == "failure" else "success", r["policy-type"])' "$rec" 2>/dev/null || echo "? ?")
  local got=deferred
  [ "$st" = 0 ] && [ $((after - before)) = 1 ] && got=delivered
  [ "$st" != 0 ] && [ "$after" != "$before" ] && fail "$name: exit $st but a message arrived"
  [ "$got" = "$expect" ] || fail "$name: $got (exit $st, outcome $outcome, reason $reason), expected $expect: $(tail -n 2 "$TMP/$name.err")"
  [ "${rtype%% *}" = "$etype" ] || fail "$name: TLS-RPT result $rtype, expected $etype"
  ROWS+=("$(printf '%-34s %-10s %-9s %-22s %-10s %s' "$name" "$got" "$outcome" "$reason" "$pol" "$rtype")")
}

run dane-ee-match            ee        dane-only delivered success                   ee-match.sec.test
run dane-ee-full-sha512      ee        dane-only delivered success                   ee-full.sec.test
run dane-ee-mismatch         ee        dane-only deferred  certificate-not-trusted   ee-mismatch.sec.test
run dane-ee-mismatch-dane    ee        dane      deferred  certificate-not-trusted   ee-mismatch.sec.test
run dane-ee-expired          expired   dane-only delivered success                   ee-expired.sec.test
run dane-ee-name-mismatch    wrongname dane-only delivered success                   ee-name.sec.test
run dane-ta-chain            ta        dane-only delivered success                   ta-chain.sec.test
run dane-ta-anchor-not-sent  tanoroot  dane-only delivered success                   ta-unsent.sec.test
run usages-0-1-only          ee        dane      delivered success                   pkix-only.sec.test
run usages-0-1-dane-only     ee        dane-only deferred  tlsa-invalid              pkix-only.sec.test
run insecure-zone-dane       ee        dane      delivered success                   insecure.ins.test
run insecure-zone-dane-only  ee        dane-only deferred  dane-required             insecure.ins.test
run bogus-signature          ee        dane      deferred  dnssec-invalid            bogus.bog.test
run sts-enforce-listed       web       may       delivered success                   sts-enforce.sts.test --mta-sts "$TMP/enforce.txt"
run sts-enforce-mx-outside   web       may       deferred  validation-failure        sts-outside.sts.test --mta-sts "$TMP/enforce-one.txt"
run sts-enforce-untrusted    webbad    may       deferred  certificate-not-trusted   sts-testing.sts.test --mta-sts "$TMP/enforce.txt"
run sts-testing-untrusted    webbad    may       delivered certificate-not-trusted   sts-testing.sts.test --mta-sts "$TMP/testing.txt"
run dane-and-sts-dane-decides ee       dane      delivered success                   both.sec.test --mta-sts "$TMP/elsewhere.txt"

# Checks that the table's columns are what they claim, beyond delivered or not.
grep -q '"policy":"encrypt"' "$TMP/usages-0-1-only.json" || fail "usages-0-1-only: not held to encrypt"
grep -q '"policy":"may"' "$TMP/insecure-zone-dane.json" || fail "insecure-zone-dane: not held to may"
grep -q '"policy":"dane"' "$TMP/dane-and-sts-dane-decides.json" || fail "dane-and-sts: DANE did not decide"
grep -q '"policy":"verify"' "$TMP/sts-enforce-listed.json" || fail "sts-enforce-listed: not held to verify"
grep -q '"attempts":\[{"connection":1,[^]]*\]' "$TMP/dane-ee-mismatch.json" && ! grep -q '"connection":2' "$TMP/dane-ee-mismatch.json" ||
  fail "dane-ee-mismatch: the ladder retried a DANE failure"
for c in bogus-signature usages-0-1-dane-only insecure-zone-dane-only sts-enforce-mx-outside; do
  grep -q '"attempts":\[\]' "$TMP/$c.json" || fail "$c: a connection was tried before the policy deferred"
done

# ---- the TLS-RPT report of all those sessions, against the schema ----
"$BIN/mailtls-tlsrpt" --all --organization "mailtls dane test" --contact postmaster@client.test "$RPT" >"$TMP/report.json" ||
  fail "mailtls-tlsrpt failed"
if /usr/bin/python3 "$ROOT/tests/tlsrpt/validate.py" "$ROOT/tests/tlsrpt/rfc8460.schema.json" "$TMP/report.json" >"$TMP/validate.out" 2>&1; then
  :
else
  fail "the TLS-RPT report does not validate: $(tail -n 3 "$TMP/validate.out")"
fi
summary=$(/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
ok = sum(p["summary"]["total-successful-session-count"] for p in r["policies"])
bad = sum(p["summary"]["total-failure-session-count"] for p in r["policies"])
types = sorted({f["result-type"] for p in r["policies"] for f in p.get("failure-details", [])})
print(len(r["policies"]), ok, bad, ",".join(types))' "$TMP/report.json")
read -r npol nok nbad types <<<"$summary"
[ "$((nok + nbad))" = "${#ROWS[@]}" ] || fail "the report counts $nok + $nbad sessions, ran ${#ROWS[@]}"
# One entry per distinct policy, whatever order the resolver gave each RRset in: the
# 18 cases hold 16 (the two mismatch cases share one RRset, the two usages-0/1 cases
# another with two records; the two insecure cases are tlsa and no-policy-found).
[ "$npol" = 16 ] || fail "the report has $npol policies, expected 16"

printf '%-34s %-10s %-9s %-22s %-10s %s\n' case mail outcome reason policy "tls-rpt (result, policy-type)"
printf '%s\n' "${ROWS[@]}"
echo "dane-test: TLS-RPT report: $npol policies, $nok successful and $nbad failed sessions, result types $types; schema-valid"
[ $FAILED = 0 ] || exit 1
echo "dane-test: ${#ROWS[@]} cases through NSD + Unbound + libunbound, all as expected; $(( $(date +%s) - START )) s"
