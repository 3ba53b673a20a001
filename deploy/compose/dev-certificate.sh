#!/usr/bin/env bash
# A self-signed certificate for the local compose setup (https://localhost:8443), valid 30 days,
# written to deploy/compose/certs/ (not committed). Production uses a real certificate.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/certs"
mkdir -p "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
chmod 0644 "$out/tls.key"  # read by nginx's worker user inside its container
echo "wrote $out/tls.crt and $out/tls.key"
