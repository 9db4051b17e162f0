#!/usr/bin/env bash
# The collector's TLS certificate without cert-manager: a CA of Sockeye's
# own (made once, kept in DIR), and a certificate from it for the
# collector's Service name, written as the Secret the deployment mounts
# (sockeye-collector-tls: ca.crt, tls.crt, tls.key).
#
#   scripts/make-collector-cert.sh DIR            make (or renew) the files in DIR
#   scripts/make-collector-cert.sh DIR --apply    ... and create or update the
#                                                 Secret with kubectl
#
# Run it again before the certificate expires (it is valid for 90 days): the
# CA stays, a new key and certificate replace the old ones, and after
# --apply the kubelet updates the mounted files within a minute or two; the
# collector picks them up (--tls-reload-every) without a restart and
# without dropping a stream. Agents trust the CA, which did not change.
#
# Needs openssl (Debian: openssl); --apply also kubectl. The CA's key stays
# in DIR: keep DIR where only you can read it.
set -euo pipefail

die() { printf 'make-collector-cert: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: $0 DIR [--apply]"
dir=$1
apply=0
[[ "${2:-}" == --apply ]] && apply=1
namespace=${SOCKEYE_NAMESPACE:-sockeye}
service=sockeye-collector.$namespace.svc
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"

umask 077
mkdir -p "$dir"
if [[ ! -s "$dir/ca.key" || ! -s "$dir/ca.crt" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=sockeye collector CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  echo "made a CA in $dir/ca.crt (its key: $dir/ca.key)"
fi
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$service" -keyout "$dir/tls.key.new" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$service" "$service" > "$dir/tls.ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 90 -extfile "$dir/tls.ext" -out "$dir/tls.crt.new" 2>/dev/null
openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt.new" >/dev/null || die "the new certificate does not verify against $dir/ca.crt"
mv "$dir/tls.key.new" "$dir/tls.key"
mv "$dir/tls.crt.new" "$dir/tls.crt"
rm -f "$dir/tls.csr" "$dir/tls.ext"
echo "certificate for $service in $dir/tls.crt, valid until $(openssl x509 -enddate -noout -in "$dir/tls.crt" | cut -d= -f2)"

if (( apply )); then
  command -v kubectl >/dev/null || die "--apply needs kubectl"
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$namespace" create secret generic sockeye-collector-tls \
    --from-file=ca.crt="$dir/ca.crt" --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" \
    --dry-run=client -o yaml | kubectl apply -f -
else
  echo "create or update the Secret with:"
  echo "  kubectl -n $namespace create secret generic sockeye-collector-tls --from-file=ca.crt=$dir/ca.crt --from-file=tls.crt=$dir/tls.crt --from-file=tls.key=$dir/tls.key --dry-run=client -o yaml | kubectl apply -f -"
fi
