#!/usr/bin/env bash
# make check-abi: the shared library exports the C API and nothing else, every
# function under the version node abi/mailtls.symbols records, with the soname it
# records.
#
#   scripts/check-abi.sh LIBRARY [SYMBOLS [HEADER]]
#   scripts/check-abi.sh --self-test LIBRARY
#
# Fails when a recorded symbol is gone or has another version (programs linked
# against the library would no longer load), when a symbol that is not mailtls_* or
# has no version is exported, when a function of the header is not exported, and
# when the library exports a symbol the file does not record yet: each addition is
# printed as the line to add. --self-test runs the check on doctored copies of the
# file and fails unless each doctoring is caught.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

check() {
  local lib=$1 symbols=${2:-$ROOT/abi/mailtls.symbols} header=${3:-$ROOT/include/mailtls.h}
  local bad=0 tmp
  tmp=$(mktemp -d -p "$WORK")
  [ -f "$lib" ] || { echo "check-abi: $lib does not exist" >&2; return 1; }

  # Defined dynamic symbols with their versions; the A entries are the version
  # nodes themselves.
  nm -D --defined-only --with-symbol-versions "$lib" | awk '$2 != "A" { print $3 }' | sort -u >"$tmp/exported"
  grep -vE '^(#|soname |$)' "$symbols" | sort -u >"$tmp/recorded"
  sed 's/@.*//' "$tmp/exported" | sort -u >"$tmp/exported-names"
  # Function declarations of the header: lines that start a declaration (not a
  # comment, a directive or a callback typedef) naming mailtls_something(.
  grep -E '^[a-z]' "$header" | grep -v '^typedef' \
    | grep -oE '[ *]mailtls_[a-z0-9_]+\(' | tr -d ' *(' | sort -u >"$tmp/declared"

  local want_soname got_soname
  want_soname=$(sed -n 's/^soname //p' "$symbols")
  got_soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  if [ "$got_soname" != "$want_soname" ]; then
    echo "check-abi: soname is '${got_soname:-none}', $symbols records '$want_soname'"
    bad=1
  fi

  local s name
  while read -r s; do
    echo "check-abi: exported but not part of the C API: $s"
    bad=1
  done < <(grep -v '^mailtls_' "$tmp/exported" || true)
  while read -r s; do
    echo "check-abi: exported without a symbol version: $s"
    bad=1
  done < <(grep '^mailtls_' "$tmp/exported" | grep -v '@' || true)
  while read -r s; do
    name=${s%%@*}
    if grep -qx "$name" "$tmp/exported-names"; then
      echo "check-abi: $name changed version: recorded $s, exported $(grep "^$name@" "$tmp/exported" | head -n 1)"
    else
      echo "check-abi: $s is recorded but no longer exported: programs that use it would not load"
    fi
    bad=1
  done < <(comm -23 "$tmp/recorded" "$tmp/exported")
  while read -r s; do
    name=${s%%@*}
    # A name recorded under another version was reported above.
    grep -q "^$name@" "$tmp/recorded" && continue
    echo "check-abi: new export, add this line to abi/mailtls.symbols: $s"
    bad=1
  done < <(comm -13 "$tmp/recorded" "$tmp/exported" | grep '^mailtls_.*@' || true)
  while read -r s; do
    echo "check-abi: $s is declared in $(basename "$header") but not exported (abi/mailtls.map?)"
    bad=1
  done < <(comm -23 "$tmp/declared" "$tmp/exported-names")
  while read -r s; do
    echo "check-abi: $s is exported but not declared in $(basename "$header")"
    bad=1
  done < <(comm -13 "$tmp/declared" "$tmp/exported-names" | grep '^mailtls_' || true)

  if [ $bad -ne 0 ]; then
    return 1
  fi
  echo "check-abi: $(basename "$lib"): $(wc -l <"$tmp/exported") symbols, soname $got_soname, as abi/mailtls.symbols records"
}

# Each doctored copy of the file must fail the check, with the message that names
# the cause.
self_test() {
  local lib=$1 tmp first out failed=0
  tmp=$(mktemp -d -p "$WORK")
  first=$(grep -m 1 '^mailtls_' "$ROOT/abi/mailtls.symbols")
  doctor() { # NAME EXPECTED-MESSAGE SED-SCRIPT
    sed "$3" "$ROOT/abi/mailtls.symbols" >"$tmp/$1"
    if out=$(check "$lib" "$tmp/$1" 2>&1); then
      echo "check-abi self-test: $1 was not caught"
      failed=1
    elif ! grep -q "$2" <<<"$out"; then
      echo "check-abi self-test: $1 failed without saying '$2':"
      echo "$out"
      failed=1
    fi
  }
  doctor removed-symbol "no longer exported" '$a mailtls_gone@@MAILTLS_0'
  doctor changed-version "changed version" "s/^${first}\$/${first%%@*}@@MAILTLS_9/"
  doctor unrecorded-symbol "new export, add this line" "/^${first}\$/d"
  doctor other-soname "soname is" 's/^soname .*/soname libmailtls.so.9/'
  [ $failed -eq 0 ] || return 1
  echo "check-abi: self-test: a removed symbol, a changed version, an unrecorded export and another soname are each caught"
}

if [ "${1:-}" = --self-test ]; then
  self_test "$2"
else
  check "$@"
fi
