#!/bin/bash
# A test PKI for RAUC bundles, made once into DIR (default build/image/pki):
#   ca.cert.pem / ca.key.pem            the test CA; the image trusts ca.cert.pem
#   signing.cert.pem / signing.key.pem  the bundle signing key (codeSigning purpose)
# For real devices, put the production CA's certificate in the image instead
# (FLUXBOX_RAUC_KEYRING=/path/ca.cert.pem image/build.sh) and sign bundles with its key.
set -euo pipefail
D=$(realpath -m "${1:-$(dirname "$0")/../../build/image/pki}")
[ -s "$D/signing.cert.pem" ] && [ -s "$D/ca.cert.pem" ] && exit 0
mkdir -p "$D"; chmod 700 "$D"
cd "$D"
cat > openssl.cnf <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[signing_ext]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key.pem -out ca.cert.pem -days 3650 \
    -subj "/O=Flux Box test/CN=Flux Box test update CA" -config openssl.cnf -extensions ca_ext 2>/dev/null
openssl req -new -newkey rsa:3072 -nodes -keyout signing.key.pem -out signing.csr.pem \
    -subj "/O=Flux Box test/CN=Flux Box test bundle signing" -config openssl.cnf 2>/dev/null
openssl x509 -req -in signing.csr.pem -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial \
    -out signing.cert.pem -days 3650 -extfile openssl.cnf -extensions signing_ext 2>/dev/null
rm -f signing.csr.pem
chmod 600 ./*.key.pem
echo "pki.sh: made a test CA and a bundle signing key in $D"
