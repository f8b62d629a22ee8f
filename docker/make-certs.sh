#!/usr/bin/env bash
# Certificates for TLS to every server of docker/compose.yaml (Kafka, PostgreSQL, Redis),
# made with openssl only.
#
#   docker/make-certs.sh            create the CA (once) and issue the leaf certificates
#   docker/make-certs.sh --rotate   issue new leaf certificates with the existing CA
#                                   (quarterly; clients keep trusting the same CA)
#   docker/make-certs.sh --new-ca   start over with a new CA (every client must get ca.crt)
#
# Writes into docker/certs/ (or $CERTS_DIR), all PEM, one folder per consumer so that
# each container mounts only what it needs (and sees rotated files: folders are mounted,
# files are replaced by rename):
#   ca/ca.crt, ca/ca.key              the private CA (never mounted; keep ca.key offline)
#   kafka/broker.keystore.pem         broker private key (PKCS#8) + certificate chain:
#                                     Kafka's ssl.keystore.type=PEM file
#   kafka/broker.truststore.pem       the CA: Kafka's ssl.truststore.type=PEM file
#   kafka/broker.crt                  the broker certificate alone (for inspection)
#   postgres/ca.crt, postgres/server.crt, postgres/server.key
#                                     TimescaleDB's ssl_ca_file, ssl_cert_file, ssl_key_file
#   redis/ca.crt, redis/server.crt, redis/server.key
#                                     Redis' --tls-ca-cert-file, --tls-cert-file, --tls-key-file
#                                     (also the healthcheck's client certificate)
#   client/ca.crt, client/client.crt, client/client.key
#                                     what the selflearn workers, tools and MLflow need for
#                                     mTLS to all three servers
#
# Environment:
#   KAFKA_CERT_SANS  extra subjectAltNames of the broker, e.g. "DNS:kafka.example.com,IP:10.0.0.5"
#   POSTGRES_CERT_SANS, REDIS_CERT_SANS   the same for PostgreSQL and Redis
#   LEAF_DAYS        validity of the leaf certificates (default 120: rotate every quarter)
#   CA_DAYS          validity of the CA (default 1825)
#   CERTS_UID/GID    owner of the key files when run as root (default 1000: the apache/kafka
#                    image's appuser and the selflearn image's user)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${CERTS_DIR:-$here/certs}"
leaf_days="${LEAF_DAYS:-120}"
ca_days="${CA_DAYS:-1825}"
sans="DNS:kafka,DNS:localhost,IP:127.0.0.1${KAFKA_CERT_SANS:+,$KAFKA_CERT_SANS}"
pg_sans="DNS:timescaledb,DNS:localhost,IP:127.0.0.1${POSTGRES_CERT_SANS:+,$POSTGRES_CERT_SANS}"
redis_sans="DNS:redis,DNS:localhost,IP:127.0.0.1${REDIS_CERT_SANS:+,$REDIS_CERT_SANS}"
mode="create"
case "${1:-}" in
  "") ;;
  --rotate) mode="rotate" ;;
  --new-ca) mode="new-ca" ;;
  -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
  *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
esac

command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
mkdir -p "$out"
umask 077
tmp="$(mktemp -d "$out/.tmp.XXXXXX")"  # same file system: mv is an atomic rename
trap 'rm -rf "$tmp"' EXIT

new_key() {  # an EC P-256 key in PKCS#8 PEM ("BEGIN PRIVATE KEY"), what Kafka's PEM store reads
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

ca="$out/ca"
mkdir -p "$ca" "$out/kafka" "$out/client" "$out/postgres" "$out/redis"
if [ "$mode" = "new-ca" ] || [ ! -s "$ca/ca.key" ] || [ ! -s "$ca/ca.crt" ]; then
  if [ "$mode" = "rotate" ]; then
    echo "--rotate needs an existing CA in $ca (ca.key, ca.crt)" >&2; exit 1
  fi
  echo "creating CA in $ca"
  new_key "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$ca_days" \
    -subj "/O=selflearn/CN=selflearn-ca" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.crt"
  mv "$tmp/ca.key" "$ca/ca.key"
  mv "$tmp/ca.crt" "$ca/ca.crt"
elif [ "$mode" = "create" ] && [ -s "$out/kafka/broker.keystore.pem" ]; then
  echo "certificates already exist in $out; use --rotate to reissue them" >&2
  exit 0
fi

issue() {  # issue NAME CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  local name="$1" cn="$2" eku="$3" san="${4:-}"
  new_key "$tmp/$name.key"
  openssl req -new -key "$tmp/$name.key" -subj "/O=selflearn/CN=$cn" -out "$tmp/$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
  } > "$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -sha256 -days "$leaf_days" \
    -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>/dev/null
  openssl verify -CAfile "$ca/ca.crt" "$tmp/$name.crt" >/dev/null
}

# The broker also acts as a client of its own controller listener, hence clientAuth.
issue broker kafka "serverAuth,clientAuth" "$sans"
issue client selflearn-worker "clientAuth"
issue postgres timescaledb "serverAuth" "$pg_sans"
# redis-cli in the healthcheck presents the server's own certificate, hence clientAuth.
issue redis redis "serverAuth,clientAuth" "$redis_sans"

cat "$tmp/broker.key" "$tmp/broker.crt" "$ca/ca.crt" > "$tmp/broker.keystore.pem"
cp "$ca/ca.crt" "$tmp/broker.truststore.pem"
cp "$ca/ca.crt" "$tmp/client-ca.crt"
chmod 0644 "$tmp/broker.crt" "$tmp/broker.truststore.pem" "$tmp/client.crt" "$tmp/client-ca.crt" \
  "$tmp/postgres.crt" "$tmp/redis.crt"
chmod 0640 "$tmp/broker.keystore.pem" "$tmp/postgres.key" "$tmp/redis.key"
# libpq refuses a client key readable by its group unless root owns it.
chmod 0600 "$tmp/client.key"
if [ "$(id -u)" = "0" ]; then
  # The PostgreSQL key is copied and re-owned by the container's entrypoint (compose.yaml).
  chown "${CERTS_UID:-1000}:${CERTS_GID:-1000}" "$tmp/broker.keystore.pem" "$tmp/client.key" \
    "$tmp/postgres.key" "$tmp/redis.key"
elif [ "$(id -u)" != "${CERTS_UID:-1000}" ]; then
  echo "note: the key files belong to uid $(id -u); the containers read them as uid" \
       "${CERTS_UID:-1000}: run this script as root, or chown them" >&2
fi
chmod 0600 "$ca/ca.key"
chmod 0644 "$ca/ca.crt"
# Replace by rename, so a broker reloading its keystore never reads half a file.
mv -f "$tmp/broker.keystore.pem" "$tmp/broker.truststore.pem" "$tmp/broker.crt" "$out/kafka/"
mv -f "$tmp/client.key" "$tmp/client.crt" "$out/client/"
mv -f "$tmp/client-ca.crt" "$out/client/ca.crt"
for server in postgres redis; do
  cp "$ca/ca.crt" "$tmp/$server-ca.crt"
  chmod 0644 "$tmp/$server-ca.crt"
  mv -f "$tmp/$server.key" "$out/$server/server.key"
  mv -f "$tmp/$server.crt" "$out/$server/server.crt"
  mv -f "$tmp/$server-ca.crt" "$out/$server/ca.crt"
done
chmod 0755 "$out/kafka" "$out/client" "$out/postgres" "$out/redis"
chmod 0700 "$ca"

echo "issued (valid $leaf_days days):"
openssl x509 -in "$out/kafka/broker.crt" -noout -subject -enddate -ext subjectAltName \
  | sed 's/^/  broker: /'
openssl x509 -in "$out/client/client.crt" -noout -subject -enddate | sed 's/^/  client: /'
for server in postgres redis; do
  openssl x509 -in "$out/$server/server.crt" -noout -subject -enddate -ext subjectAltName \
    | sed "s/^/  $server: /"
done
