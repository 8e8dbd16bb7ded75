#!/bin/sh
# Make a private CA and a serving certificate for mlguard's admission webhook, for clusters
# without cert-manager. Output (git-ignored): tls/ca.crt, tls/ca.key, tls/tls.crt, tls/tls.key.
#
#   ./make-certs.sh [--namespace NS] [--service NAME] [--days N] [--out DIR]
#
# Keep tls/ca.key offline (it is not put into the cluster). To rotate the serving certificate,
# run again with the same --out: an existing CA is reused, so caBundle does not change.
set -eu

namespace=mlguard-system
service=mlguard-webhook
days=90
ca_days=3650
out="$(dirname "$0")/tls"

while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "make-certs.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

command -v openssl >/dev/null 2>&1 || { echo "make-certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$out"
umask 077

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$ca_days" \
    -subj "/CN=mlguard-webhook-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"
fi

dns1="$service.$namespace.svc"
dns2="$service.$namespace.svc.cluster.local"
openssl ecparam -name prime256v1 -genkey -noout -out "$out/tls.key.new"
openssl req -new -key "$out/tls.key.new" -subj "/CN=$dns1" -out "$out/tls.csr"
ext="$out/tls.ext"
cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$dns1,DNS:$dns2
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$ext" -out "$out/tls.crt.new" 2>/dev/null
mv "$out/tls.key.new" "$out/tls.key"
mv "$out/tls.crt.new" "$out/tls.crt"
rm -f "$out/tls.csr" "$ext" "$out/ca.srl"
chmod 0600 "$out/tls.key" "$out/ca.key"
chmod 0644 "$out/tls.crt" "$out/ca.crt"
echo "wrote $out/ca.crt, $out/tls.crt, $out/tls.key for $dns1 (valid $days days)"
