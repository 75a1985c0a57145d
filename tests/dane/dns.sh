# A private DNSSEC hierarchy for the DANE tests, sourced by them (bash, works under
# set -euo pipefail). NSD serves presigned zones, Unbound validates them, both started
# as the test's own processes and stopped by dns_stop.
#
#   test.              the "root": its DS is Unbound's trust anchor, a stub-zone sends
#                      everything under test. to NSD; names outside test. are refused
#   ZONE (secure)      signed, with its DS in test.
#   ZONE (insecure)    delegated from test. without a DS: unsigned
#   ZONE (bogus)       signed, with its DS in test., but every signature expired in
#                      2000: Unbound answers SERVFAIL, libunbound says bogus
#
# Use:
#   source tests/dane/dns.sh
#   dns_enter_netns "$@"            # first: re-runs the script in a network namespace
#   dns_init "$TMP/dns"             # the work directory (keys, zones, configs, logs)
#   dns_zone mx.test secure         # a child of test. (secure | insecure | bogus)
#   dns_record mx.test "@ 300 MX 10 mail.mx.test."
#   dns_record mx.test "mail 300 A 127.0.0.1"
#   dns_record mx.test "_25._tcp.mail 300 TLSA $(tlsa_rdata 3 1 1 cert.pem)"
#   (or dns_mx, dns_host, dns_tlsa: the same lines, shorter)
#   dns_start                       # signs, starts NSD and Unbound, checks each zone
#   ...                             # dig, mailtls-dnslookup, Postfix
#   dns_stop                        # also from an EXIT trap; idempotent
#
# dns_enter_netns re-executes the calling script ("$0" with the given arguments) under
# `unshare --net --mount` with loopback up, so the fixed ports (Unbound 53, NSD 5353)
# collide with nothing on the host or in another test, nothing leaves the machine, and
# /etc/resolv.conf can be replaced for the programs of the test alone (dns_start does,
# with `nameserver 127.0.0.1` and `options edns0 trust-ad`, so getaddrinfo, dig without
# @server and Postfix ask our Unbound and trust its AD bit). Where unshare is not
# allowed (not root), the script goes on outside, with free ports picked by binding
# port 0, and the system resolver is left alone (DNS_SYSTEM_RESOLVER=0).
#
# Set by dns_start, for the tests:
#   DNS_PORT            Unbound's port on 127.0.0.1
#   DNS_NSD_PORT        NSD's port on 127.0.0.1
#   DNS_RESOLVER        "127.0.0.1@$DNS_PORT" (mailtls-dnslookup --dns, ub_ctx_set_fwd)
#   DNS_ANCHOR          the trust anchor file (the DS of test.), for libunbound
#   DNS_SYSTEM_RESOLVER 1 when /etc/resolv.conf points at our Unbound (in the namespace)
#   DNS_DIR             the work directory (dns_init)
# Logs: $DNS_DIR/unbound.log (val-log-level 2: why each answer is bogus), nsd.log.

DNS_TLD=test
DNS_PIDS=()

# dns_enter_netns ARGS...: the script's own arguments. Inside the namespace (or when it
# cannot be had) it returns; outside it execs the script again inside one.
dns_enter_netns() {
  case "${MAILTLS_DNS_NETNS:-}" in
    inside)
      ip link set lo up
      return 0 ;;
    none) return 0 ;;
  esac
  if [ "$(id -u)" -eq 0 ] && unshare --net --mount true 2>/dev/null; then
    export MAILTLS_DNS_NETNS=inside
    exec unshare --net --mount -- "$BASH" "$0" "$@"
  fi
  echo "dns.sh: no network namespace here (needs root and unshare): free ports on the host's loopback" >&2
  export MAILTLS_DNS_NETNS=none
}

# dns_init DIR: starts a hierarchy description in DIR (created; must not hold one).
dns_init() {
  DNS_DIR=$1
  mkdir -p "$DNS_DIR/zones" "$DNS_DIR/keys"
  : >"$DNS_DIR/zonelist"
  DNS_PIDS=()
  DNS_SYSTEM_RESOLVER=0
  if [ "${MAILTLS_DNS_NETNS:-}" = inside ]; then
    DNS_PORT=${DNS_PORT:-53}
    DNS_NSD_PORT=${DNS_NSD_PORT:-5353}
  else
    local p
    p=$(_dns_free_ports 2)
    DNS_PORT=${p% *}
    DNS_NSD_PORT=${p#* }
  fi
  DNS_RESOLVER=127.0.0.1@$DNS_PORT
  DNS_ANCHOR=$DNS_DIR/keys/$DNS_TLD.ds
  export DNS_DIR DNS_PORT DNS_NSD_PORT DNS_RESOLVER DNS_ANCHOR DNS_SYSTEM_RESOLVER
  _dns_zone_file "$DNS_TLD" >/dev/null
}

# N free ports on 127.0.0.1, free for both TCP and UDP, bound and released at once.
_dns_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(); t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        held.append(t); continue
    held += [t, u]; ports.append(port)
print(" ".join(map(str, ports)))
PY
}

# The zone file being built for ZONE (its header written the first time).
_dns_zone_file() {
  local zone=$1 f=$DNS_DIR/zones/$1.zone
  if [ ! -e "$f" ]; then
    {
      printf '$ORIGIN %s.\n$TTL 300\n' "$zone"
      printf '@ 300 SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n' "$DNS_TLD" "$DNS_TLD"
      printf '@ 300 NS ns.%s.\n' "$DNS_TLD"
    } >"$f"
    [ "$zone" = "$DNS_TLD" ] && printf 'ns 300 A 127.0.0.1\n' >>"$f"
  fi
  printf '%s\n' "$f"
}

# dns_zone ZONE secure|insecure|bogus: a zone delegated from test. (ZONE ends in .test).
dns_zone() {
  local zone=${1%.} mode=$2
  case "$zone" in *."$DNS_TLD") ;; *) echo "dns_zone: $zone is not under $DNS_TLD." >&2; return 1 ;; esac
  case "$mode" in secure|insecure|bogus) ;; *) echo "dns_zone: mode '$mode' is not secure, insecure or bogus" >&2; return 1 ;; esac
  if grep -q "^$zone " "$DNS_DIR/zonelist"; then echo "dns_zone: $zone already declared" >&2; return 1; fi
  printf '%s %s\n' "$zone" "$mode" >>"$DNS_DIR/zonelist"
  _dns_zone_file "$zone" >/dev/null
}

# dns_record ZONE "NAME TTL TYPE DATA": one line of ZONE's file ($ORIGIN is ZONE.), so
# NAME is relative to the zone unless it ends in a dot. ZONE may be test. itself.
dns_record() {
  local zone=${1%.}
  if [ "$zone" != "$DNS_TLD" ] && ! grep -q "^$zone " "$DNS_DIR/zonelist"; then
    echo "dns_record: zone $zone not declared (dns_zone)" >&2; return 1
  fi
  printf '%s\n' "$2" >>"$(_dns_zone_file "$zone")"
}

# Shorthands for dns_record, with absolute host names (no final dot needed):
#   dns_mx ZONE PREF HOST          ZONE's apex MX
#   dns_host ZONE HOST [ADDR]      HOST's A record (127.0.0.1 by default)
#   dns_tlsa ZONE HOST PORT RDATA  TLSA at _PORT._tcp.HOST (RDATA: "U S M hex", tlsa_rdata)
dns_mx() { dns_record "$1" "@ 300 MX $2 ${3%.}."; }
dns_host() { dns_record "$1" "${2%.}. 300 A ${3:-127.0.0.1}"; }
dns_tlsa() { dns_record "$1" "_$3._tcp.${2%.}. 300 TLSA $4"; }

# tlsa_rdata USAGE SELECTOR MTYPE CERT.pem: prints the TLSA rdata "U S M hex" for the
# first certificate in CERT.pem. SELECTOR 0: the whole certificate (DER), 1: its
# SubjectPublicKeyInfo (DER); MTYPE 0: the bytes themselves, 1: SHA-256, 2: SHA-512.
tlsa_rdata() {
  local u=$1 s=$2 m=$3 cert=$4 der hex
  der=$(mktemp)
  case "$s" in
    0) openssl x509 -in "$cert" -outform DER -out "$der" ;;
    1) openssl x509 -in "$cert" -noout -pubkey | openssl pkey -pubin -outform DER -out "$der" ;;
    *) rm -f "$der"; echo "tlsa_rdata: selector $s is not 0 or 1" >&2; return 1 ;;
  esac
  case "$m" in
    0) hex=$(od -An -v -tx1 "$der" | tr -d ' \n') ;;
    1) hex=$(openssl dgst -sha256 -binary "$der" | od -An -v -tx1 | tr -d ' \n') ;;
    2) hex=$(openssl dgst -sha512 -binary "$der" | od -An -v -tx1 | tr -d ' \n') ;;
    *) rm -f "$der"; echo "tlsa_rdata: matching type $m is not 0, 1 or 2" >&2; return 1 ;;
  esac
  rm -f "$der"
  [ -n "$hex" ] || { echo "tlsa_rdata: no certificate in $cert" >&2; return 1; }
  printf '%s %s %s %s\n' "$u" "$s" "$m" "$hex"
}

# A signing key for ZONE (ECDSA P-256, one key as KSK and ZSK): prints its base name.
_dns_key() {
  local zone=$1 base
  base=$(cd "$DNS_DIR/keys" && ldns-keygen -a ECDSAP256SHA256 -k "$zone.")
  rm -f "$DNS_DIR/keys/$base.ds"
  printf '%s/keys/%s\n' "$DNS_DIR" "$base"
}

# _dns_sign ZONE KEYBASE INCEPTION EXPIRATION: ZONE.zone -> ZONE.zone.signed
_dns_sign() {
  ldns-signzone -i "$3" -e "$4" -o "$1." -f "$DNS_DIR/zones/$1.zone.signed" "$DNS_DIR/zones/$1.zone" "$2"
}

# dns_start: signs the zones, writes the configurations, starts NSD and Unbound, waits
# until each answers and checks that every zone validates as declared.
dns_start() {
  local now valid_from valid_until zone mode key ds
  now=$(date +%s)
  valid_from=$((now - 3600))
  valid_until=$((now + 7 * 86400))
  # the children first: their DS records go into test.
  while read -r zone mode; do
    if [ "$mode" = insecure ]; then
      cp "$DNS_DIR/zones/$zone.zone" "$DNS_DIR/zones/$zone.zone.signed"
    else
      key=$(_dns_key "$zone")
      if [ "$mode" = secure ]; then
        _dns_sign "$zone" "$key" "$valid_from" "$valid_until"
      else
        # bogus: well-formed signatures by the key the parent's DS names, that expired
        # long ago (Unbound: "signature expired"; no clock skew allowance reaches 2000)
        _dns_sign "$zone" "$key" 20000101000000 20000201000000
      fi
      ds=$(ldns-key2ds -n -2 "$key.key")
      printf '%s\n' "$ds" >>"$DNS_DIR/zones/$DNS_TLD.zone"
    fi
    printf '%s. 300 NS ns.%s.\n' "$zone" "$DNS_TLD" >>"$DNS_DIR/zones/$DNS_TLD.zone"
  done <"$DNS_DIR/zonelist"
  key=$(_dns_key "$DNS_TLD")
  _dns_sign "$DNS_TLD" "$key" "$valid_from" "$valid_until"
  ldns-key2ds -n -2 "$key.key" >"$DNS_ANCHOR"

  _dns_nsd_conf >"$DNS_DIR/nsd.conf"
  _dns_unbound_conf >"$DNS_DIR/unbound.conf"
  nsd-checkconf "$DNS_DIR/nsd.conf"
  unbound-checkconf "$DNS_DIR/unbound.conf" >/dev/null
  while read -r zone mode; do
    nsd-checkzone "$zone." "$DNS_DIR/zones/$zone.zone.signed" >/dev/null
  done < <(printf '%s x\n' "$DNS_TLD"; cat "$DNS_DIR/zonelist")

  # Both in the foreground (-d), each leading a process group of its own (setsid
  # execs them: a background job is no group leader), so dns_stop can stop NSD's
  # server and xfrd children with it and wait until all of them are gone.
  setsid nsd -d -c "$DNS_DIR/nsd.conf" >"$DNS_DIR/nsd.out" 2>&1 &
  DNS_PIDS+=($!)
  _dns_wait "NSD" @127.0.0.1 -p "$DNS_NSD_PORT" +norecurse "$DNS_TLD." SOA
  setsid unbound -d -c "$DNS_DIR/unbound.conf" >"$DNS_DIR/unbound.out" 2>&1 &
  DNS_PIDS+=($!)
  _dns_wait "Unbound" @127.0.0.1 -p "$DNS_PORT" "$DNS_TLD." SOA

  if [ "${MAILTLS_DNS_NETNS:-}" = inside ] && [ "$DNS_PORT" = 53 ]; then
    printf 'nameserver 127.0.0.1\noptions edns0 trust-ad\n' >"$DNS_DIR/resolv.conf"
    mount --bind "$DNS_DIR/resolv.conf" /etc/resolv.conf
    DNS_SYSTEM_RESOLVER=1
  fi

  _dns_expect "$DNS_TLD" secure
  while read -r zone mode; do _dns_expect "$zone" "$mode"; done <"$DNS_DIR/zonelist"
}

_dns_nsd_conf() {
  cat <<EOF
server:
  ip-address: 127.0.0.1@$DNS_NSD_PORT
  do-ip6: no
  port: $DNS_NSD_PORT
  username: ""
  chroot: ""
  zonesdir: "$DNS_DIR/zones"
  database: ""
  zonelistfile: "$DNS_DIR/nsd.zonelist"
  xfrdfile: "$DNS_DIR/nsd.xfrd"
  xfrdir: "$DNS_DIR"
  pidfile: "$DNS_DIR/nsd.pid"
  logfile: "$DNS_DIR/nsd.log"
  server-count: 1
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
EOF
  local zone mode
  while read -r zone mode; do
    printf 'zone:\n  name: "%s."\n  zonefile: "%s.zone.signed"\n' "$zone" "$zone"
  done < <(printf '%s x\n' "$DNS_TLD"; cat "$DNS_DIR/zonelist")
}

# Validating, with test. as the only island of trust. Names outside test. are refused
# at once (local-zone "." refuse) rather than sent to the root servers, which a
# namespace cannot reach and a test must not ask.
_dns_unbound_conf() {
  cat <<EOF
server:
  interface: 127.0.0.1
  port: $DNS_PORT
  do-ip6: no
  interface-automatic: no
  access-control: 127.0.0.0/8 allow
  username: ""
  chroot: ""
  directory: "$DNS_DIR"
  pidfile: "$DNS_DIR/unbound.pid"
  use-syslog: no
  logfile: "$DNS_DIR/unbound.log"
  log-time-ascii: yes
  verbosity: 1
  val-log-level: 2
  num-threads: 1
  so-reuseport: no
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor-file: "$DNS_ANCHOR"
  local-zone: "." refuse
  local-zone: "$DNS_TLD." transparent
stub-zone:
  name: "$DNS_TLD."
  stub-addr: 127.0.0.1@$DNS_NSD_PORT
remote-control:
  control-enable: no
EOF
}

# _dns_wait WHAT DIG-ARGS...: until dig gets an answer with NOERROR (10 s), or fails
# with the server's output.
_dns_wait() {
  local what=$1 out; shift
  for _ in $(seq 100); do
    out=$(dig +time=1 +tries=1 "$@" 2>&1 || true)
    case "$out" in *"status: NOERROR"*) return 0 ;; esac
    sleep 0.1
  done
  echo "dns.sh: $what does not answer: $out" >&2
  cat "$DNS_DIR"/nsd.out "$DNS_DIR"/nsd.log "$DNS_DIR"/unbound.out "$DNS_DIR"/unbound.log 2>/dev/null | tail -n 20 >&2
  return 1
}

# dns_status NAME TYPE: what Unbound says about NAME TYPE: "secure" (NOERROR with AD),
# "insecure" (NOERROR without AD), "bogus" (SERVFAIL), or the status dig printed.
dns_status() {
  local out
  out=$(dig +time=2 +tries=1 +dnssec @127.0.0.1 -p "$DNS_PORT" "$1" "$2" 2>&1 || true)
  case "$out" in
    *"status: SERVFAIL"*) echo bogus ;;
    *"status: NOERROR"*)
      case "$out" in *"flags: "*" ad"*";"*) echo secure ;; *) echo insecure ;; esac ;;
    *"status: "*) sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out" | head -n 1 ;;
    *) echo "no-answer" ;;
  esac
}

# _dns_expect ZONE MODE: the zone's SOA validates as MODE, or dns_start fails.
_dns_expect() {
  local got
  got=$(dns_status "$1." SOA)
  if [ "$got" != "$2" ]; then
    echo "dns.sh: zone $1. should be $2 but Unbound says $got" >&2
    tail -n 20 "$DNS_DIR/unbound.log" >&2 || true
    return 1
  fi
}

# dns_stop: stops the servers dns_start started (their process groups, by id) and
# waits until nothing of them is left. Safe to call twice or before
# dns_start, and from a trap.
dns_stop() {
  local p
  for p in "${DNS_PIDS[@]}"; do
    kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$p" 2>/dev/null || true
  done
  DNS_PIDS=()
  if [ "${DNS_SYSTEM_RESOLVER:-0}" = 1 ]; then
    umount /etc/resolv.conf 2>/dev/null || true
    DNS_SYSTEM_RESOLVER=0
  fi
  return 0
}
