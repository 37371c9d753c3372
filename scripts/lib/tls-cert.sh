# shellcheck shell=bash
# Sourced, not run: a throwaway certificate for loopback TLS (scripts/browser-test.sh,
# scripts/tls.sh). Keys go under target/ only, and are never committed.
#
# tls_cert DIR: makes, with openssl, a CA (DIR/ca.pem, DIR/ca.key) and a leaf for localhost and
# 127.0.0.1 signed by it (DIR/cert.pem, DIR/key.pem), both ECDSA P-256 (what a deployment would
# use), valid for a day. A leaf that is its own CA is not enough: webpki (rustls' verifier)
# rejects a CA certificate as an end entity, so clients trust DIR/ca.pem and the server presents
# DIR/cert.pem with DIR/key.pem.
tls_cert() {
    local dir=$1
    command -v openssl >/dev/null || { echo "tls_cert: needs openssl" >&2; return 2; }
    mkdir -p "$dir"
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
            -subj "/CN=throng test CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
        openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
            -days 1 -out "$dir/cert.pem" -extfile <(printf '%s\n' \
                "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth") 2>/dev/null
    ) || { echo "tls_cert: openssl failed to make the certificates in $dir" >&2; return 1; }
    rm -f "$dir/leaf.csr" "$dir/ca.srl"
}
