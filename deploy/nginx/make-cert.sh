#!/bin/sh
# Makes a self-signed certificate for the nginx profile, once; real certificates replace these files.
set -eu
dir=/etc/nginx/certs
if [ -s "$dir/fullchain.pem" ] && [ -s "$dir/privkey.pem" ]; then
  echo "certs: existing certificate kept"; exit 0
fi
apk add --no-cache openssl >/dev/null
openssl req -x509 -nodes -newkey rsa:2048 -days 365 -subj "/CN=${TLS_HOSTNAME:-localhost}" \
  -addext "subjectAltName=DNS:${TLS_HOSTNAME:-localhost}" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem"
echo "certs: self-signed certificate for ${TLS_HOSTNAME:-localhost} written"
