#!/usr/bin/env bash
# Installs what the build, the demo and the tests need, from Debian's packages.
# Idempotent: installs only what is missing. Fails loudly when something cannot be had.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have gcc || need+=(gcc)
have g++ || need+=(g++)   # libFuzzer (fuzz/), compiled by libfuzzer-sys
have make || need+=(make)
have valgrind || need+=(valgrind)
have git || need+=(git)
have python3 || need+=(python3)
# make tlsrpt-test validates reports against a JSON Schema with Debian's jsonschema,
# for Debian's own python3 (the python3 on PATH may be another, a pyenv for one).
if ! [ -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import jsonschema' >/dev/null 2>&1; then
  need+=(python3 python3-jsonschema)
fi
# AddressSanitizer's runtime for gcc.
if ! echo 'int main(void){return 0;}' | gcc -x c -fsanitize=address -o /dev/null - >/dev/null 2>&1; then
  need+=(libasan8)
fi
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# mailtls-server's legacy TLS engine (the handoff example) links the system OpenSSL.
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
have openssl || need+=(openssl)
# The example Redis store (examples-c/redis-store.c) links hiredis, Redis's own C
# client; tests/examples/client-redis-memory.sh runs a redis-server of its own on
# loopback and looks at the keys with redis-cli (redis-tools).
[ -e /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
have redis-server || need+=(redis-server)
have redis-cli || need+=(redis-tools)
# make install-test: programs built with pkg-config against an installed prefix, the
# man pages rendered with groff and man (readelf and nm come with gcc's binutils).
have pkg-config || need+=(pkgconf)
have groff || need+=(groff-base)
have man || need+=(man-db)
# make msmtp: msmtp's release tarball has configure.ac and no configure script.
have autoreconf || need+=(autoconf)
have automake || need+=(automake)
have autopoint || need+=(autopoint)
# DANE tests (tests/dane): a private DNSSEC hierarchy served by NSD (presigned zones,
# nothing else to configure) from zones signed with ldns-signzone, whose -e/-i give
# the expired signatures of the bogus zone (Knot signs zones itself and keeps them
# valid, the opposite of what that zone needs); Unbound validates it, libunbound is
# the example client's resolver (examples-c/dns-lookup.c), dig is for diagnosis.
# unshare and ip (util-linux, iproute2) put each test in its own network namespace.
[ -x /usr/sbin/nsd ] || need+=(nsd)
have ldns-signzone || need+=(ldnsutils)
[ -x /usr/sbin/unbound ] || need+=(unbound)
[ -e /usr/include/unbound.h ] || need+=(libunbound-dev)
have dig || need+=(bind9-dnsutils)
have unshare || need+=(util-linux)
[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # redis-server's package would start a system Redis on port 6379, nsd's and
  # unbound's a DNS server on port 53; the tests run their own, so services are kept
  # from starting for the install (a policy-rc.d, when the machine has none, as
  # install-real-servers.sh does).
  POLICY=/usr/sbin/policy-rc.d
  ours=0
  if [ ! -e $POLICY ]; then
    printf '#!/bin/sh\n# installed by mailtls install-deps.sh for the duration of one install\nexit 101\n' |
      $SUDO tee $POLICY >/dev/null
    $SUDO chmod 755 $POLICY
    ours=1
  fi
  restore() { if [ $ours = 1 ]; then $SUDO rm -f $POLICY; fi; }
  trap restore EXIT
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  restore
  trap - EXIT
  # A machine whose own policy-rc.d lets services start: the DNS servers just
  # installed are stopped, nothing of ours may answer on the host's port 53.
  for svc in nsd unbound; do
    case " ${need[*]} " in *" $svc "*) ;; *) continue ;; esac
    if pgrep -x "$svc" >/dev/null; then $SUDO invoke-rc.d --force "$svc" stop >/dev/null 2>&1 || true; fi
  done
fi

have cargo || { echo "install-deps: cargo (Rust toolchain) is required and cannot be installed here" >&2; exit 1; }
# The fuzz targets (make fuzz, make fuzz-smoke) build with cargo-fuzz from crates.io;
# (libFuzzer itself is compiled from source by libfuzzer-sys, hence g++ above).
if ! have cargo-fuzz; then
  echo "install-deps: installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi
echo "install-deps: ok"
