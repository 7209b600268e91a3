//! An app that never touches rustls gets a working TLS setup: building a
//! client installs ring as the process's crypto provider when none is
//! installed (nothing else in this test binary installs one), and keeps an
//! app's own provider when there is one.

#[test]
fn building_a_client_installs_a_crypto_provider() {
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    tokenim_client::Client::new("https://chat.example.com").expect("client");
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    // A second client leaves it as it is.
    let before = rustls::crypto::CryptoProvider::get_default().cloned();
    tokenim_client::Client::new("https://chat.example.com").expect("client");
    let after = rustls::crypto::CryptoProvider::get_default().cloned();
    assert!(std::sync::Arc::ptr_eq(&before.unwrap(), &after.unwrap()));
}
