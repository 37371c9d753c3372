# shellcheck shell=bash
# Sourced, not run: a throwaway certificate for loopback TLS (scripts/browser-test.sh,
# scripts/tls.sh, scripts/conformance.sh). Keys go under target/ only, and are never committed.
#
# tls_cert DIR: makes, with openssl, a CA (DIR/ca.pem; its key is deleted) and a leaf for localhost and
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
    # The CA's key goes: nothing can be signed with this CA afterwards. The chain is checked
    # here, so a bad one fails where it was made rather than as a client's TLS alert.
    rm -f "$dir/leaf.csr" "$dir/ca.srl" "$dir/ca.key"
    openssl verify -CAfile "$dir/ca.pem" "$dir/cert.pem" >/dev/null ||
        { echo "tls_cert: the leaf in $dir does not verify against its CA" >&2; return 1; }
}
