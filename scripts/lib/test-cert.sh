# shellcheck shell=bash
# Sourced (not run) by the scripts that serve TLS to a local client: test_cert DIR makes a
# throwaway CA and a certificate for localhost and 127.0.0.1 signed by it, valid for a day, so a
# client can verify the whole chain against the CA rather than skip verification. It writes
#   DIR/ca.pem    the CA's certificate (the one file a client trusts)
#   DIR/cert.pem  the chain to serve: the leaf, then the CA
#   DIR/key.pem   the leaf's private key
# (the CA's key and the signing request are deleted: nothing can be signed with it afterwards).
# Everything is made fresh on each call, under target/: keys are never committed nor reused.
# Needs the openssl CLI.
test_cert() { # DIR
    local dir=$1
    mkdir -p "$dir"
    rm -f "$dir"/ca.pem "$dir"/cert.pem "$dir"/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=throng test CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign" \
        -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
    # A leaf for serving only (no CA bit, serverAuth), so a client that checks the chain's
    # constraints accepts it the way it would a real one.
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/leaf.ext"
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -set_serial 1 \
        -days 1 -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null
    cat "$dir/leaf.pem" "$dir/ca.pem" >"$dir/cert.pem"
    rm -f "$dir/ca-key.pem" "$dir/leaf.csr" "$dir/leaf.ext" "$dir/leaf.pem"
    openssl verify -CAfile "$dir/ca.pem" "$dir/cert.pem" >/dev/null
}
