use super::*;

fn pair(name: &str) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[test]
fn loads_a_pair_and_refuses_a_mismatched_key() {
    let (chain, key) = pair("localhost");
    let certificates = Certificates::from_pem(chain.as_bytes(), key.as_bytes()).expect("pair");
    let first = certificates.current();
    let (_, other_key) = pair("localhost");
    let error = certificates.reload_pem(chain.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(matches!(error, TlsError::Rustls(_)), "{error}");
    // The refused reload left the pair in place.
    assert!(Arc::ptr_eq(&first, &certificates.current()));
    let (chain2, key2) = pair("example.test");
    certificates.reload_pem(chain2.as_bytes(), key2.as_bytes()).expect("reload");
    assert!(!Arc::ptr_eq(&first, &certificates.current()));
}

#[test]
fn says_what_is_missing() {
    let (chain, key) = pair("localhost");
    let error = Certificates::from_pem(b"not pem", key.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("no certificate in PEM data"), "{error}");
    let error = Certificates::from_pem(chain.as_bytes(), b"").unwrap_err();
    assert!(error.to_string().contains("no private key"), "{error}");
    let error = Certificates::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(error.to_string().contains("cannot read /nonexistent/cert.pem"), "{error}");
}

#[test]
fn server_config_offers_http11_and_resumption() {
    let (chain, key) = pair("localhost");
    let config = server_config(Certificates::from_pem(chain.as_bytes(), key.as_bytes()).unwrap()).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(config.ticketer.enabled());
    assert_eq!(config.max_early_data_size, 0);
}
