#!/usr/bin/env bash
# make tlsrpt-test: mailtls-tlsrpt's reports against RFC 8460. Record files are
# written the way an MTA on the examples writes them (tlsrpt_record_write, by the
# small write-records.c, compiled here against build/obj/examples-c/common.o and
# the library), and by hand; build/bin/mailtls-tlsrpt adds them up; the report is
# validated against rfc8460.schema.json (our transcription of RFC 8460 section 4.4:
# the RFC has no machine-readable schema) with Debian's python3-jsonschema, and its
# counts are checked. The schema is shown to fail deliberately broken reports, and
# the tool to refuse a bad record line. Uses what `make examples` built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/tlsrpt
TOOL=$ROOT/build/bin/mailtls-tlsrpt
PY=/usr/bin/python3
CC=${CC:-cc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-tlsrpt.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "tlsrpt-test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "tlsrpt-test: ok: $*"; }

[ -x "$TOOL" ] || { echo "tlsrpt-test: $TOOL is missing: make examples first"; exit 1; }
"$PY" -c 'import jsonschema' 2>/dev/null || { echo "tlsrpt-test: $PY has no jsonschema: bash scripts/install-deps.sh"; exit 1; }
validate() { "$PY" "$HERE/validate.py" "$HERE/rfc8460.schema.json" "$@"; }

# ---- Record files, written as the MTA writes them ----------------------------
"$CC" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/include" -I"$ROOT/examples-c" \
  -o "$WORK/write-records" "$HERE/write-records.c" "$ROOT/build/obj/examples-c/common.o" \
  "$ROOT/target/debug/libmailtls.a" -lpthread -ldl -lm
DAY=1704067200 # 2024-01-01T00:00:00Z
mkdir "$WORK/records"
sts='"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: *.b.example","max_age: 86400"],"policy-domain":"b.example","mx-host":["*.b.example"]'
tlsa='"policy-type":"tlsa","policy-string":["3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],"policy-domain":"a.example","mx-host":["mx.a.example"]'
none='"policy-type":"no-policy-found","policy-string":[],"policy-domain":"c.example","mx-host":[]'
rec() { # TIME POLICY [RESULT-TYPE [EXTRA]]
  if [ $# -eq 2 ]; then
    printf '{"mailtls-tlsrpt":1,"time":%s,%s,"result":"success"}\n' "$1" "$2"
  else
    printf '{"mailtls-tlsrpt":1,"time":%s,%s,"result":"failure","result-type":"%s"%s}\n' "$1" "$2" "$3" "${4:-}"
  fi
}
{
  for i in 1 2 3 4 5; do rec $((DAY + i)) "$tlsa"; done
  rec $((DAY + 10)) "$tlsa" dnssec-invalid ',"receiving-mx-hostname":"mx.a.example"'
  rec $((DAY + 11)) "$tlsa" tlsa-invalid
  rec $((DAY + 12)) "$tlsa" dane-required
  for i in 1 2 3; do rec $((DAY + 20 + i)) "$sts"; done
  # Every result type of RFC 8460 section 4.3 once, under the STS policy; the
  # expired certificate twice, identical: one entry counting 2.
  n=30
  for rt in starttls-not-supported certificate-host-mismatch certificate-expired certificate-expired \
            certificate-not-trusted validation-failure sts-policy-fetch-error sts-policy-invalid sts-webpki-invalid; do
    rec $((DAY + n)) "$sts" $rt ',"sending-mta-ip":"192.0.2.1","receiving-ip":"192.0.2.25","failure-reason-code":"x"'
    n=$((n + 1))
  done
  rec $((DAY + 50)) "$none"
  rec $((DAY + 51)) "$none" starttls-not-supported ',"receiving-mx-helo":"mx.c.example","additional-information":"said \"no\"\n"'
  # The day before and the day after: in no count of the day's report.
  rec $((DAY - 1)) "$tlsa"
  rec $((DAY + 86400)) "$sts" certificate-expired
} | "$WORK/write-records" "$WORK/records"
files=$(find "$WORK/records" -name '*.tlsrpt' | wc -l)
odd=$(find "$WORK/records" -type f ! -regex '.*/[0-9]+-[0-9]+-[0-9]+\.tlsrpt' | wc -l)
[ "$files" -eq 24 ] && [ "$odd" -eq 0 ] && ok "tlsrpt_record_write: 24 files named TIME-PID-N.tlsrpt, no temporary left" \
  || fail "tlsrpt_record_write left $files record files and $odd others: $(ls -A "$WORK/records")"
# A file of several lines, written by hand, and a file the tool must not read.
{ rec $((DAY + 60)) "$none"; echo; rec $((DAY + 61)) "$none"; } >"$WORK/records/by-hand.tlsrpt"
echo 'not a record' >"$WORK/records/notes.txt"

# ---- The day's report --------------------------------------------------------
"$TOOL" --organization "Example Sender" --contact mailto:tlsrpt@sender.example \
  --start $DAY --end $((DAY + 86400)) "$WORK/records" >"$WORK/report.json"
if validate "$WORK/report.json"; then ok "the day's report is valid under rfc8460.schema.json"; else fail "the day's report is not valid: $(cat "$WORK/report.json")"; fi
# Counts: per domain "successes failures [result-type:count ...]".
counts=$("$PY" - "$WORK/report.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
for p in r["policies"]:
    s = p["summary"]
    d = " ".join(f'{f["result-type"]}:{f["failed-session-count"]}' for f in p.get("failure-details", []))
    print(p["policy"]["policy-domain"], p["policy"]["policy-type"], s["total-successful-session-count"], s["total-failure-session-count"], d)
print("range", r["date-range"]["start-datetime"], r["date-range"]["end-datetime"], r["report-id"])
PYEOF
)
want="a.example tlsa 5 3 dane-required:1 dnssec-invalid:1 tlsa-invalid:1
b.example sts 3 9 certificate-expired:2 certificate-host-mismatch:1 certificate-not-trusted:1 starttls-not-supported:1 sts-policy-fetch-error:1 sts-policy-invalid:1 sts-webpki-invalid:1 validation-failure:1
c.example no-policy-found 3 1 starttls-not-supported:1
range 2024-01-01T00:00:00Z 2024-01-01T23:59:59Z 2024-01-01T00:00:00Z_Example Sender"
if [ "$counts" = "$want" ]; then
  ok "counts per policy and per failure, the range and the default report-id are right"
else
  fail "counts differ:"$'\n'"$counts"$'\n'"expected:"$'\n'"$want"
fi

# --all: whole days around every record, the days before and after included.
"$TOOL" --all --organization o --contact c "$WORK/records" >"$WORK/all.json"
all=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["date-range"]["start-datetime"], r["date-range"]["end-datetime"], sum(p["summary"]["total-successful-session-count"]+p["summary"]["total-failure-session-count"] for p in r["policies"]))' "$WORK/all.json")
[ "$all" = "2023-12-31T00:00:00Z 2024-01-02T23:59:59Z 26" ] && validate "$WORK/all.json" \
  && ok "--all: $all (range and every session)" || fail "--all gave: $all"

# A range without a session is a valid report with no policy.
"$TOOL" --organization o --contact c --start 0 --end 86400 --output "$WORK/empty.json" "$WORK/records"
if validate "$WORK/empty.json" && grep -q '"policies":\[\]' "$WORK/empty.json"; then ok "--output: an empty range is a valid report with an empty policy list"; else fail "empty range: $(cat "$WORK/empty.json")"; fi

# ---- The check can fail: broken reports are refused by the schema --------------
broken=0
while IFS='|' read -r what expr; do
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); $expr; json.dump(r, open(sys.argv[2], 'w'))" \
    "$WORK/report.json" "$WORK/broken.json"
  if validate "$WORK/broken.json" >"$WORK/broken.log"; then
    fail "the schema accepts a report with $what"
  else
    broken=$((broken + 1))
  fi
done <<'CASES'
no report-id|del r["report-id"]
an unknown result-type|r["policies"][1]["failure-details"][0]["result-type"] = "certificate-stale"
an unknown policy-type|r["policies"][0]["policy"]["policy-type"] = "dane"
a count as a string|r["policies"][0]["summary"]["total-successful-session-count"] = "5"
a negative count|r["policies"][0]["failure-details"][0]["failed-session-count"] = -1
a null optional field|r["policies"][1]["failure-details"][0]["receiving-mx-helo"] = None
a misspelt field|r["policies"][0]["summary"]["total-success-session-count"] = r["policies"][0]["summary"].pop("total-successful-session-count")
a date without a time|r["date-range"]["end-datetime"] = "2024-01-01"
policies as an object|r["policies"] = r["policies"][0]
CASES
[ $broken -eq 9 ] && ok "the schema refuses each of 9 deliberately broken reports"

# ---- Bad record lines ----------------------------------------------------------
cp -r "$WORK/records" "$WORK/bad"
{ rec $((DAY + 70)) "$none"; rec $((DAY + 71)) "$none" certificate-stale; } >"$WORK/bad/zz-bad.tlsrpt"
set +e
"$TOOL" --organization o --contact c --start $DAY --end $((DAY + 86400)) "$WORK/bad" >"$WORK/bad.out" 2>"$WORK/bad.err"
rc=$?
set -e
if [ $rc -eq 65 ] && [ ! -s "$WORK/bad.out" ] && grep -q "zz-bad.tlsrpt:2: .*unknown result-type \"certificate-stale\"" "$WORK/bad.err"; then
  ok "a bad record line: exit 65, no report, the file:line and the reason on stderr"
else
  fail "a bad record line gave exit $rc, stdout $(wc -c <"$WORK/bad.out") bytes, stderr: $(cat "$WORK/bad.err")"
fi
"$TOOL" --skip-bad --organization o --contact c --start $DAY --end $((DAY + 86400)) "$WORK/bad" >"$WORK/skip.json" 2>"$WORK/skip.err"
skipped=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print([p["summary"]["total-successful-session-count"] for p in r["policies"] if p["policy"]["policy-domain"] == "c.example"][0])' "$WORK/skip.json")
if validate "$WORK/skip.json" && [ "$skipped" = 4 ] && grep -q "skipped 1 line" "$WORK/skip.err"; then
  ok "--skip-bad: the good lines reported (c.example: $skipped successes), the bad one named"
else
  fail "--skip-bad gave c.example $skipped successes, stderr: $(cat "$WORK/skip.err")"
fi

if [ $failures -ne 0 ]; then
  echo "tlsrpt-test: $failures check(s) failed"
  exit 1
fi
echo "tlsrpt-test: all checks passed"
