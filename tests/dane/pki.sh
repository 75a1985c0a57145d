# Test certificates for the DANE tests, sourced by them (bash, set -euo pipefail
# friendly). ECDSA P-256 keys; every certificate is issued with `openssl ca`, whose
# -startdate/-enddate give the expired ones (openssl x509 -req has no start date
# before OpenSSL 3.4).
#
#   pki_init DIR                          where the files go (created)
#   pki_ca NAME [ISSUER]                  a root CA, or an intermediate issued by ISSUER
#   pki_leaf NAME DNSNAME ISSUER|self [FROM UNTIL]
#                                         a server certificate for DNSNAME (subjectAltName),
#                                         self-signed or issued by ISSUER; FROM and UNTIL
#                                         are `date -d` texts ("-2 days"), default "-1 hour"
#                                         and "+2 days"
# Files, for each NAME: $PKI_DIR/NAME.key (the key), NAME.pem (the certificate alone),
# NAME.chain.pem (the certificate and every CA above it, up to and including the root:
# what a server sends when a DANE-TA(2) record names its root).
#
# A typical set for DANE (RFC 7672): a self-signed leaf for DANE-EE(3), a root CA, an
# intermediate and a leaf under it for DANE-TA(2), an expired leaf (DANE-EE ignores the
# dates, DANE-TA does not), and a leaf for another name (DANE-EE ignores the name too):
#   pki_leaf ee mail.example.test self
#   pki_ca root; pki_ca inter root; pki_leaf chained mail.example.test inter
#   pki_leaf expired mail.example.test root "-10 days" "-5 days"
#   pki_leaf wrongname other.example.test root

pki_init() {
  PKI_DIR=$1
  mkdir -p "$PKI_DIR/ca"
  : >"$PKI_DIR/ca/index.txt"
  echo 1000 >"$PKI_DIR/ca/serial"
  export PKI_DIR
}

# The `openssl ca` configuration: no policy on names, extensions from the section
# the caller names, serials and the database under $PKI_DIR/ca.
_pki_conf() {
  cat <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $PKI_DIR/ca
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
[ any_name ]
commonName = supplied
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = \$ENV::PKI_SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

# _pki_issue NAME CN EXT ISSUER|self FROM UNTIL
_pki_issue() {
  local name=$1 cn=$2 ext=$3 issuer=$4 from to conf
  from=$(date -u -d "$5" +%Y%m%d%H%M%SZ)
  to=$(date -u -d "$6" +%Y%m%d%H%M%SZ)
  conf=$PKI_DIR/ca/openssl.cnf
  _pki_conf >"$conf"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/$name.key" 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "/CN=$cn" -out "$PKI_DIR/ca/$name.csr" 2>/dev/null
  local signer=(-cert "$PKI_DIR/$issuer.pem" -keyfile "$PKI_DIR/$issuer.key")
  [ "$issuer" = self ] && signer=(-selfsign -keyfile "$PKI_DIR/$name.key")
  local out
  if ! out=$(openssl ca -batch -notext -config "$conf" -extensions "$ext" -startdate "$from" -enddate "$to" \
    "${signer[@]}" -in "$PKI_DIR/ca/$name.csr" -out "$PKI_DIR/$name.pem" 2>&1); then
    echo "pki.sh: issuing $name failed: $out" >&2
    return 1
  fi
  if [ "$issuer" = self ]; then
    cp "$PKI_DIR/$name.pem" "$PKI_DIR/$name.chain.pem"
  else
    cat "$PKI_DIR/$name.pem" "$PKI_DIR/$issuer.chain.pem" >"$PKI_DIR/$name.chain.pem"
  fi
  chmod 644 "$PKI_DIR/$name.pem" "$PKI_DIR/$name.chain.pem"
}

# pki_ca NAME [ISSUER]
pki_ca() {
  PKI_SAN=DNS:unused _pki_issue "$1" "mailtls DANE test CA $1" ca_ext "${2:-self}" "-1 hour" "+2 days"
}

# pki_leaf NAME DNSNAME ISSUER|self [FROM UNTIL]
pki_leaf() {
  PKI_SAN=DNS:$2 _pki_issue "$1" "$2" leaf_ext "$3" "${4:--1 hour}" "${5:-+2 days}"
}
