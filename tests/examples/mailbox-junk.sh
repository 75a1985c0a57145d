#!/usr/bin/env bash
# mailtls-server's IMAP, POP3, NNTP and ManageSieve dialogues under valgrind, fed
# malformed and hostile commands (tests/examples/mailbox_junk.py): every command gets
# the protocol's refusal, the session still ends normally, and valgrind finds no
# memory error and no definite leak in the server or its per-connection children.
# Run by `make test` (target examples-test).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SERVER=$ROOT/build/bin/mailtls-server
[ -x "$SERVER" ] || { echo "mailbox-junk: $SERVER is missing: make examples" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "mailbox-junk: valgrind is missing (scripts/install-deps.sh)" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-junk.XXXXXX")
PIDS=()
cleanup() {
  local st=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
  exit $st
}
trap cleanup EXIT

mkdir -p "$TMP/md/new" "$TMP/md/cur" "$TMP/md/tmp" "$TMP/spool/local.test"
printf 'From: a@test\nSubject: one\n\n.dot line\nbody\n' >"$TMP/md/new/1000.M1P1Q1.test"
printf 'From: a@test\r\nSubject: two\r\n\r\nbody\r\n' >"$TMP/md/cur/1001.M1P1Q2.test:2,S"
printf 'From: n@test\nSubject: news\nMessage-ID: <n1@test>\n\nbody\n' >"$TMP/spool/local.test/1"

status=0
for proto in imap pop3 nntp sieve; do
  case $proto in imap|pop3) store=(--maildir "$TMP/md") ;; nntp) store=(--spool "$TMP/spool") ;; sieve) store=() ;; esac
  log=$TMP/$proto.json
  valgrind -q --leak-check=full --errors-for-leak-kinds=definite --log-file="$TMP/vg-$proto.%p.log" \
    "$SERVER" --proto $proto --listen 127.0.0.1:0 --hostname localhost --once --json-log --timeout 30 \
    --user bob --pass 'p w' "${store[@]}" >"$log" 2>"$TMP/$proto.err" &
  PIDS+=($!)
  pid=$!
  for _ in $(seq 300); do [ -s "$log" ] && break; sleep 0.1; done
  port=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$log")
  [ -n "$port" ] || { cat "$TMP/$proto.err" >&2; echo "mailbox-junk: $proto server did not start" >&2; exit 1; }
  python3 "$ROOT/tests/examples/mailbox_junk.py" $proto "$port" bob 'p w' || status=1
  wait "$pid" || { echo "mailbox-junk: $proto server exited with $?" >&2; status=1; }
  # valgrind -q writes only errors: any text in the server's or a child's log is one.
  if [ -n "$(cat "$TMP"/vg-$proto.*.log 2>/dev/null)" ]; then
    cat "$TMP"/vg-$proto.*.log >&2
    echo "mailbox-junk: valgrind found errors in the $proto server" >&2
    status=1
  fi
  sed -n 2p "$log" | grep -q '"end":"quit"' || { echo "mailbox-junk: $proto session did not end with quit: $(sed -n 2p "$log")" >&2; status=1; }
done
[ $status = 0 ] && echo "mailbox-junk: every protocol answered the junk, no valgrind error"
exit $status
