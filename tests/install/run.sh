#!/usr/bin/env bash
# make install-test: mailtls as a program written elsewhere finds it. Installs into
# a temporary prefix (no root, nothing outside it), then, in a directory of its own,
# builds tests/install/starttls.c (a client and a server negotiating SMTP STARTTLS
# over a socketpair, certificate verified against a CA made here with openssl) with
# nothing but pkg-config: against the shared library, against the static one, and
# with dlopen("libmailtls.so.0"), and runs each. Checks the soname, the symbol
# versions (scripts/check-abi.sh on the installed file), the man pages (every
# function has one, each renders with no groff warning, `man -M` finds them), a
# DESTDIR install with another LIBDIR, and that uninstall leaves no file behind.
# PROFILE=debug installs the debug build (make install's default is release).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROFILE=${PROFILE:-release}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PREFIX=$WORK/usr
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
CC=${CC:-cc}
failures=0

fail() { echo "install-test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "install-test: ok: $*"; }
run_make() { # quiet unless it fails
  if ! make -C "$ROOT" --no-print-directory PROFILE="$PROFILE" "$@" >"$WORK/make.log" 2>&1; then
    cat "$WORK/make.log"
    echo "install-test: make $* failed"
    exit 1
  fi
}
# Files and links under a directory, relative to it.
files_under() { (cd "$1" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort); }

start=$(date +%s)
run_make install PREFIX="$PREFIX"
echo "install-test: make install PREFIX=\$TMP/usr PROFILE=$PROFILE installed:"
(cd "$WORK" && find usr -type f -printf '  %p\n' -o -type l -printf '  %p -> %l\n' | sort | sed -E '/man3\/mailtls_/d')
echo "  usr/share/man/man3/mailtls_*.3: $(find "$PREFIX/share/man/man3" -name 'mailtls_*.3' | wc -l) pages"

# ---- The library files ---------------------------------------------------------
lib=$PREFIX/lib/libmailtls.so.$VERSION
[ "$(readlink "$PREFIX/lib/libmailtls.so.0")" = "libmailtls.so.$VERSION" ] || fail "libmailtls.so.0 is not a link to libmailtls.so.$VERSION"
[ "$(readlink "$PREFIX/lib/libmailtls.so")" = "libmailtls.so.0" ] || fail "libmailtls.so is not a link to libmailtls.so.0"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libmailtls.so.0 ] && ok "readelf -d: SONAME $soname" || fail "SONAME is '$soname', not libmailtls.so.0"
if bash "$ROOT/scripts/check-abi.sh" "$lib" >"$WORK/abi.log" 2>&1; then
  ok "$(tail -n 1 "$WORK/abi.log" | sed 's/^check-abi: //')"
else
  cat "$WORK/abi.log"
  fail "the installed library's exports differ from abi/mailtls.symbols"
fi
for f in include/mailtls.h lib/libmailtls.a lib/pkgconfig/mailtls.pc bin/mailtls-client bin/mailtls-server bin/mailtls-tlsrpt \
  share/man/man1/mailtls-tlsrpt.1; do
  [ -f "$PREFIX/$f" ] || fail "$f is not installed"
done
cmp -s "$PREFIX/include/mailtls.h" "$ROOT/include/mailtls.h" || fail "the installed header is not include/mailtls.h"

# ---- Man pages -----------------------------------------------------------------
MAN=$PREFIX/share/man
functions=$(grep -E '^[a-z]' "$ROOT/include/mailtls.h" | grep -v '^typedef' | grep -oE '[ *]mailtls_[a-z0-9_]+\(' | tr -d ' *(' | sort -u)
missing=0
for f in $functions; do
  [ -f "$MAN/man3/$f.3" ] || { fail "no man page for $f"; missing=1; }
done
[ $missing -eq 0 ] && ok "a man3 page for each of the $(wc -w <<<"$functions") functions of the header, and mailtls.3"
[ -f "$MAN/man3/mailtls.3" ] || fail "no overview page mailtls.3"
warned=0
for page in "$MAN"/man3/*.3 "$MAN"/man1/*.1; do
  if ! out=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || [ -n "$out" ]; then
    fail "groff -man -ww warns on $(basename "$page"): $out"
    warned=1
  fi
done
[ $warned -eq 0 ] && ok "groff -man -Tutf8 -ww: no warning on any of the $(ls "$MAN"/man3/*.3 "$MAN"/man1/*.1 | wc -l) pages"
rendered=$(MANWIDTH=80 man -l "$MAN/man3/mailtls_session_read.3" 2>&1)
grep -q 'mailtls_result mailtls_session_read(mailtls_session \*s' <<<"$rendered" \
  && ok "man -l renders mailtls_session_read.3 (its synopsis)" || fail "man -l mailtls_session_read.3 gave: $rendered"
for page in mailtls mailtls_session_read mailtls-client; do
  out=$(MANWIDTH=80 man -M "$MAN" "$page" 2>&1 | head -n 1) || true
  grep -qi "^${page}(" <<<"$out" || fail "man -M \$PREFIX/share/man $page: $out"
done
ok "man -M finds mailtls(3), mailtls_session_read(3) and mailtls-client(1) in the prefix"

# ---- Programs built outside the tree, with pkg-config only ----------------------
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
unset PKG_CONFIG_LIBDIR
mkdir -p "$WORK/src" "$WORK/pki"
cp "$ROOT/tests/install/starttls.c" "$WORK/src/"
cd "$WORK/pki"
# A CA and a server certificate for mx.install.test.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=install-test-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.install.test \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:mx.install.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf \
  -out server.pem 2>/dev/null
PKI=("$WORK/pki/server.pem" "$WORK/pki/server.key" "$WORK/pki/ca.pem")
cd "$WORK/src"
CFLAGS_T=(-Wall -Wextra -Werror -std=c11 -O1)
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }
compile() { # OUTPUT CC-ARGS...: a failed compile or link is a failed check, with its output
  local output=$1
  shift
  if ! $CC "${CFLAGS_T[@]}" "$@" -o "$output" >"$WORK/cc.log" 2>&1; then
    cat "$WORK/cc.log"
    fail "building $output: $CC ${CFLAGS_T[*]} $* -o $output"
    return 1
  fi
}
try() { # NAME COMMAND...: runs a built program, prints its line (left in $out)
  local name=$1
  shift
  if out=$("$@" 2>&1); then
    ok "$name: $out"
  else
    fail "$name: $out"
  fi
}

echo "install-test: pkg-config --cflags --libs mailtls: $(pkg-config --cflags --libs mailtls)"
if compile starttls-shared starttls.c $(pkg-config --cflags --libs mailtls); then
  case " $(needed starttls-shared)" in
    *" libmailtls.so.0 "*) ;;
    *) fail "starttls-shared does not need libmailtls.so.0: $(needed starttls-shared)" ;;
  esac
  grep -q 'Name: MAILTLS_0' <<<"$(readelf -V starttls-shared)" || fail "starttls-shared does not ask for the symbol version MAILTLS_0"
  # Not "ldd | grep -q": under pipefail, grep leaving at the first match can
  # kill ldd with SIGPIPE and fail the check on a busy machine.
  loads=$(LD_LIBRARY_PATH=$PREFIX/lib ldd starttls-shared)
  grep -q "$PREFIX/lib/libmailtls.so.0" <<<"$loads" \
    || fail "starttls-shared does not load the prefix's libmailtls.so.0: $loads"
  try "shared (needs libmailtls.so.0, version MAILTLS_0)" env LD_LIBRARY_PATH="$PREFIX/lib" ./starttls-shared "${PKI[@]}"
fi

# A static link: pkg-config --static gives Libs.private; -l:libmailtls.a picks the
# archive where -lmailtls would pick the shared library beside it.
static_libs=$(pkg-config --static --libs mailtls)
echo "install-test: pkg-config --static --libs mailtls: $static_libs"
if compile starttls-static starttls.c $(pkg-config --cflags mailtls) ${static_libs/-lmailtls/-l:libmailtls.a}; then
  case " $(needed starttls-static)" in
    *libmailtls*) fail "starttls-static still needs the shared library: $(needed starttls-static)" ;;
  esac
  try "static (needs $(needed starttls-static | sed 's/ $//'))" ./starttls-static "${PKI[@]}"
fi

if compile starttls-dlopen -DUSE_DLOPEN starttls.c $(pkg-config --cflags mailtls) -ldl; then
  case " $(needed starttls-dlopen)" in
    *libmailtls*) fail "starttls-dlopen links libmailtls: $(needed starttls-dlopen)" ;;
  esac
  try "dlopen(\"libmailtls.so.0\"), dlvsym(..., \"MAILTLS_0\")" env LD_LIBRARY_PATH="$PREFIX/lib" ./starttls-dlopen "${PKI[@]}"
  grep -q "($PREFIX/lib/libmailtls.so.0)" <<<"$out" || fail "starttls-dlopen did not load the prefix's libmailtls.so.0"
fi
cd "$ROOT"

# ---- Uninstall, and a DESTDIR install with the distribution's LIBDIR ------------
run_make uninstall PREFIX="$PREFIX"
left=$(files_under "$PREFIX")
[ -z "$left" ] && ok "make uninstall leaves no file in the prefix" || fail "make uninstall left: $left"

DEST=$WORK/dest
run_make install DESTDIR="$DEST" PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu
[ -f "$DEST/usr/lib/x86_64-linux-gnu/libmailtls.so.$VERSION" ] && [ -f "$DEST/usr/include/mailtls.h" ] \
  && [ -f "$DEST/usr/share/man/man3/mailtls.3" ] || fail "DESTDIR install: files are not under \$DESTDIR/usr"
pc=$DEST/usr/lib/x86_64-linux-gnu/pkgconfig/mailtls.pc
grep -qx 'prefix=/usr' "$pc" && grep -qx 'libdir=${prefix}/lib/x86_64-linux-gnu' "$pc" \
  && ok "DESTDIR=\$TMP/dest PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu: files under DESTDIR, mailtls.pc says libdir=\${prefix}/lib/x86_64-linux-gnu" \
  || fail "DESTDIR install: mailtls.pc has $(grep -E '^(prefix|libdir)=' "$pc" | tr '\n' ' ')"
run_make uninstall DESTDIR="$DEST" PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu
left=$(files_under "$DEST")
[ -z "$left" ] && ok "make uninstall with DESTDIR leaves no file" || fail "make uninstall with DESTDIR left: $left"

echo "install-test: $(($(date +%s) - start)) s"
if [ $failures -ne 0 ]; then
  echo "install-test: $failures check(s) failed"
  exit 1
fi
echo "install-test: all checks passed"
