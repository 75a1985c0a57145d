#!/usr/bin/env bash
# Real IMAP, POP3, NNTP and ManageSieve clients against mailtls-server on loopback
# (issue 5): openssl s_client (-starttls imap|pop3|nntp|sieve and the implicit-TLS
# ports), curl (IMAP and POP3, --ssl-reqd and imaps/pop3s), Python's imaplib, poplib
# and nntplib, and mailtls-client itself. Each logs in and reads what the server holds:
# the maildir that mailtls-server --proto smtp filled, a news spool, a script store.
# The server's JSON log must show TLS 1.3 and the login for every connection. A server
# with --require-tls must refuse each protocol's login in plaintext. Prints a table.
# Run by `make test` (target real-clients); the packages come from run.sh's installer.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SERVER=$ROOT/build/bin/mailtls-server
CLIENT=$ROOT/build/bin/mailtls-client
[ -x "$SERVER" ] && [ -x "$CLIENT" ] || { echo "protocols: build/bin is missing: make examples" >&2; exit 1; }
for tool in openssl curl python3; do
  command -v $tool >/dev/null || { echo "protocols: $tool is missing (tests/real-clients/run.sh installs it)" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-protocols.XXXXXX")
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
fail() { echo "protocols: FAILED: $*" >&2; FAILED=1; }
USER_=bob
PASS_='s3cret pass'   # a space: clients must quote it

# A test CA (ca.pem, what the clients trust) and the server's certificate for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.pem" \
  -days 2 -subj "/CN=mailtls test CA" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" -out "$TMP/req.pem" \
  -subj /CN=localhost >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TMP/ext.cnf"
openssl x509 -req -in "$TMP/req.pem" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial -days 2 \
  -extfile "$TMP/ext.cnf" -out "$TMP/cert.pem" >/dev/null 2>&1

# start NAME ARGS...: a server on 127.0.0.1 port 0; sets PORT and LOG (its JSON lines)
start() {
  local name=$1; shift
  mkdir -p "$TMP/$name"
  LOG=$TMP/$name/log.json
  "$SERVER" --listen 127.0.0.1:0 --hostname localhost --cert "$TMP/cert.pem" --key "$TMP/key.pem" \
    --json-log --timeout 20 "$@" >"$LOG" 2>"$TMP/$name/err" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$LOG" ] && break; sleep 0.1; done
  PORT=$(sed -n '1s/.*:\([0-9][0-9]*\)".*/\1/p' "$LOG")
  [ -n "$PORT" ] || { cat "$TMP/$name/err" >&2; echo "protocols: $name did not start" >&2; exit 1; }
}
# conn_line LOG N: the JSON line of connection N (1-based), once it is there
conn_line() {
  for _ in $(seq 100); do
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

# ---- what the servers hold ----
# The maildir: two messages delivered by mailtls-client through mailtls-server --proto smtp.
start smtp --proto smtp --maildir "$TMP/md"
for i in 1 2; do
  printf 'From: a@test\r\nTo: bob@test\r\nSubject: real client %s\r\n\r\nhello %s\r\n' $i $i >"$TMP/msg$i.eml"
  "$CLIENT" --policy verify --cafile "$TMP/ca.pem" --servername localhost --from a@test --to bob@test \
    --message "$TMP/msg$i.eml" "127.0.0.1:$PORT" 2>"$TMP/smtp/client$i.err" || { cat "$TMP/smtp/client$i.err" >&2; fail "smtp delivery $i"; }
done
[ "$(ls "$TMP/md/new" | wc -l)" = 2 ] || fail "the maildir does not hold the two messages"
# The spool: two groups.
mkdir -p "$TMP/spool/local.test" "$TMP/spool/local.other"
printf 'From: n@test\nNewsgroups: local.other\nSubject: other news\nMessage-ID: <o1@test>\n\nother\n' >"$TMP/spool/local.other/1"
for i in 1 2 3; do
  printf 'From: n@test\nNewsgroups: local.test\nSubject: news %s\nMessage-ID: <n%s@test>\n\n.a line with a dot\nbody %s\n' \
    $i $i $i >"$TMP/spool/local.test/$i"
done
# The script store: two scripts, one active.
mkdir -p "$TMP/sieve"
printf 'require "fileinto";\nif header :contains "subject" "news" { fileinto "news"; }\n' >"$TMP/sieve/filter.sieve"
printf 'require "vacation";\nvacation "away";\n' >"$TMP/sieve/vacation.sieve"
echo filter >"$TMP/sieve/.active"

store_args() {
  case $1 in
    imap|pop3) echo --maildir "$TMP/md" ;;
    nntp) echo --spool "$TMP/spool" ;;
    sieve) echo --scripts "$TMP/sieve" ;;
  esac
}

# row PROTO MODE CLIENT LOG N RESULT OK(0|1): checks the server's line N and records a row
row() {
  local proto=$1 mode=$2 client=$3 log=$4 n=$5 result=$6 ok=$7
  local l ver user
  l=$(conn_line "$log" "$n"); ver=$(field "$l" tls_version); user=$(field "$l" user)
  [ "$ver" = TLSv1.3 ] || { fail "$proto $mode $client: server saw TLS $ver ($l)"; ok=0; }
  [ "$user" = "$USER_" ] || { fail "$proto $mode $client: server saw login $user ($l)"; ok=0; }
  ROWS+=("$(printf '%-6s %-9s %-18s %-8s %-5s %s' "$proto" "$mode" "$client" "$ver" "$([ "$ok" = 1 ] && echo ok || echo FAIL)" "$result")")
}

B64=$(printf '\0%s\0%s' "$USER_" "$PASS_" | base64 -w0)
# The commands openssl s_client sends once TLS is up, and what the answer must hold.
s_client_script() {
  case $1 in
    imap) printf 'a1 LOGIN %s "%s"\r\na2 SELECT INBOX\r\na3 FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\na4 LOGOUT\r\n' "$USER_" "$PASS_" ;;
    pop3) printf 'USER %s\r\nPASS %s\r\nSTAT\r\nRETR 2\r\nQUIT\r\n' "$USER_" "$PASS_" ;;
    nntp) printf 'AUTHINFO USER %s\r\nAUTHINFO PASS %s\r\nGROUP local.test\r\nARTICLE 3\r\nQUIT\r\n' "$USER_" "$PASS_" ;;
    sieve) printf 'AUTHENTICATE "PLAIN" "%s"\r\nLISTSCRIPTS\r\nGETSCRIPT "vacation"\r\nLOGOUT\r\n' "$B64" ;;
  esac
}
s_client_expect() {
  case $1 in
    imap) echo 'Subject: real client 2' ;;
    pop3) echo 'Subject: real client 2' ;;
    nntp) echo '^\.\.a line with a dot' ;;
    sieve) echo 'vacation "away"' ;;
  esac
}

for proto in imap pop3 nntp sieve; do
  for mode in starttls implicit; do
    implicit=(); [ $mode = implicit ] && implicit=(--implicit)
    # shellcheck disable=SC2046
    start "$proto-$mode" --proto $proto "${implicit[@]}" --user "$USER_" --pass "$PASS_" $(store_args $proto)
    N=0

    # openssl s_client
    starttls=(-starttls $proto); [ $mode = implicit ] && starttls=()
    s_client_script $proto | timeout 20 openssl s_client "${starttls[@]}" -connect "127.0.0.1:$PORT" \
      -CAfile "$TMP/ca.pem" -verify_return_error -servername localhost -verify_hostname localhost -quiet \
      >"$TMP/$proto-$mode/s_client.out" 2>&1 || true
    N=$((N+1)); ok=1
    grep -q "$(s_client_expect $proto)" "$TMP/$proto-$mode/s_client.out" || { ok=0; fail "$proto $mode openssl: $(tail -3 "$TMP/$proto-$mode/s_client.out")"; }
    row $proto $mode "openssl s_client" "$LOG" $N "read: $(s_client_expect $proto | tr -d '^\\')" $ok

    # curl (IMAP and POP3)
    if [ $proto = imap ] || [ $proto = pop3 ]; then
      scheme=$proto; [ $mode = implicit ] && scheme=${proto/imap/imaps} && scheme=${scheme/pop3/pop3s}
      path=/2; [ $proto = imap ] && path='/INBOX;MAILINDEX=2'
      ssl=(--ssl-reqd); [ $mode = implicit ] && ssl=()
      curl -sS "${ssl[@]}" --cacert "$TMP/ca.pem" --resolve "localhost:$PORT:127.0.0.1" -u "$USER_:$PASS_" \
        "$scheme://localhost:$PORT$path" >"$TMP/$proto-$mode/curl.out" 2>&1 || true
      N=$((N+1)); ok=1
      grep -q 'Subject: real client 2' "$TMP/$proto-$mode/curl.out" || { ok=0; fail "$proto $mode curl: $(tail -3 "$TMP/$proto-$mode/curl.out")"; }
      row $proto $mode curl "$LOG" $N "message 2 read" $ok
    fi

    # Python's imaplib, poplib, nntplib
    if [ $proto != sieve ]; then
      N=$((N+1)); ok=1
      res=$(python3 "$ROOT/tests/real-clients/mailbox_clients.py" $proto $mode "$PORT" "$TMP/ca.pem" "$USER_" "$PASS_" 2>&1) \
        || { ok=0; fail "$proto $mode python: $res"; }
      lib=${proto/imap/imaplib}; lib=${lib/pop3/poplib}; lib=${lib/nntp/nntplib}
      row $proto $mode "python $lib" "$LOG" $N "$(echo "$res" | tail -1 | cut -c1-60)" $ok
    fi

    # mailtls-client
    N=$((N+1)); ok=1
    "$CLIENT" --proto $proto "${implicit[@]}" --policy verify --cafile "$TMP/ca.pem" --servername localhost \
      --user "$USER_" --pass "$PASS_" "127.0.0.1:$PORT" >"$TMP/$proto-$mode/mtc.out" 2>"$TMP/$proto-$mode/mtc.err" \
      || { ok=0; fail "$proto $mode mailtls-client: $(tail -3 "$TMP/$proto-$mode/mtc.err")"; }
    case $proto in
      imap) want='INBOX 2 messages' ;; pop3) want='maildrop 2 messages' ;;
      nntp) want='group local.test articles 1-3' ;; sieve) want='script filter (active)' ;;
    esac
    grep -qF "$want" "$TMP/$proto-$mode/mtc.out" || { ok=0; fail "$proto $mode mailtls-client printed: $(cat "$TMP/$proto-$mode/mtc.out")"; }
    row $proto $mode mailtls-client "$LOG" $N "$want" $ok
  done
done

# ---- require-TLS: credentials in plaintext are refused with each protocol's reply ----
for proto in imap pop3 nntp sieve; do
  # shellcheck disable=SC2046
  start "$proto-require" --proto $proto --require-tls --user "$USER_" --pass "$PASS_" $(store_args $proto)
  case $proto in
    imap) cmd='a1 LOGIN bob x'; want='a1 NO \[PRIVACYREQUIRED\]'; caps='a0 CAPABILITY'; capwant='LOGINDISABLED' ;;
    pop3) cmd='USER bob'; want='-ERR \[SYS/PERM\]'; caps='CAPA'; capwant='^STLS' ;;
    nntp) cmd='AUTHINFO USER bob'; want='^483 '; caps='CAPABILITIES'; capwant='^STARTTLS' ;;
    sieve) cmd='AUTHENTICATE "PLAIN" "AGJvYgB4"'; want='ENCRYPT-NEEDED'; caps='CAPABILITY'; capwant='"SASL" ""' ;;
  esac
  python3 - "$PORT" "$caps" "$cmd" >"$TMP/$proto-require/out" 2>&1 <<'PY' || true
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall((sys.argv[2] + "\r\n" + sys.argv[3] + "\r\n").encode())
time.sleep(0.5)
s.settimeout(1)
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except socket.timeout:
    pass
sys.stdout.write(data.decode("latin-1"))
PY
  ok=1
  grep -q -- "$want" "$TMP/$proto-require/out" || { ok=0; fail "$proto require-tls: no refusal in $(cat "$TMP/$proto-require/out")"; }
  grep -q -- "$capwant" "$TMP/$proto-require/out" || { ok=0; fail "$proto require-tls: capabilities lack $capwant"; }
  ROWS+=("$(printf '%-6s %-9s %-18s %-8s %-5s %s' $proto plaintext "login before TLS" - "$([ $ok = 1 ] && echo ok || echo FAIL)" "refused: $(echo "$want" | tr -d '^\\')")")
done

echo
echo "protocol by real client (mailtls-server, TLS verified against a test certificate for localhost)"
printf '%-6s %-9s %-18s %-8s %-5s %s\n' proto mode client tls check "what was read"
printf '%s\n' "${ROWS[@]}"
[ $FAILED = 0 ] || { echo "protocols: some clients failed" >&2; exit 1; }
echo "protocols: every client logged in and read over TLS"
