//! TLS termination for `parapet serve`: the certificate chain and key are read from the PEM files
//! named in the configuration, turned into a rustls server configuration (TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`, the `ring` provider) and swapped in place on reload, so a renewed
//! certificate is picked up by new connections without a restart or a dropped connection.
//!
//! Also decides whether plain HTTP may be served at all: a gateway that holds signing authority
//! must not take bearer keys in clear text off the network by accident, so plain HTTP is the
//! default only on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Protocols offered in ALPN, preferred first: HTTP/2 when the client speaks it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How the listener may serve, decided before anything is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Loopback only: the development default, no traffic leaves the host.
    Loopback,
    /// A non-loopback address with `allow_plain_http`: TLS is terminated in front (a proxy or a
    /// mesh), the operator said so explicitly.
    Allowed,
}

/// Decides whether plain HTTP may be served on `listen`. A non-loopback address needs the
/// explicit `allow_plain_http` flag; the error names it and the TLS settings, so the operator
/// sees both ways out.
pub fn plain_http_mode(listen: SocketAddr, allow_plain_http: bool) -> Result<PlainHttp> {
    if listen.ip().to_canonical().is_loopback() {
        Ok(PlainHttp::Loopback)
    } else if allow_plain_http {
        Ok(PlainHttp::Allowed)
    } else {
        Err(Error::Config(format!(
            "refusing to serve plain HTTP on the non-loopback address {listen}: set tls_cert and \
             tls_key (PARAPET_TLS_CERT, PARAPET_TLS_KEY) to serve TLS, or set allow_plain_http = \
             true (PARAPET_ALLOW_PLAIN_HTTP=true) if TLS is terminated in front of the gateway"
        )))
    }
}

/// The crypto provider for every TLS configuration: `ring`, chosen explicitly so the build never
/// depends on which provider features other crates enable. Also installed as the process
/// default (once) for any rustls user that asks for the default.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let provider = rustls::crypto::ring::default_provider();
            // Err only means another default is already installed; ours is still used below.
            let _ = provider.clone().install_default();
            Arc::new(provider)
        })
        .clone()
}

/// Reads the certificate chain (leaf first) from a PEM file.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "TLS certificate {}: cannot read: {e}",
            path.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, pem::Error>>()
        .map_err(|e| {
            Error::Config(format!(
                "TLS certificate {}: invalid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "TLS certificate {}: no CERTIFICATE block found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads exactly one private key (PKCS#8, PKCS#1 or SEC1) from a PEM file. Errors name the file
/// and the problem only: nothing read from the file reaches a message.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("TLS key {}: cannot read: {e}", path.display())))?;
    let mut keys = PrivateKeyDer::pem_slice_iter(&bytes);
    let first = match keys.next() {
        Some(Ok(key)) => key,
        Some(Err(_)) => {
            return Err(Error::Config(format!(
                "TLS key {}: invalid PEM",
                path.display()
            )));
        }
        None => {
            return Err(Error::Config(format!(
                "TLS key {}: no private key found (expected PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                path.display()
            )));
        }
    };
    if keys.next().is_some() {
        return Err(Error::Config(format!(
            "TLS key {}: more than one private key; keep exactly one",
            path.display()
        )));
    }
    Ok(first)
}

/// Where the TLS certificate chain and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Builds the rustls server configuration from the PEM files: TLS 1.2 and 1.3, no client
/// certificates, ALPN `h2` then `http/1.1`. Fails if the key does not match the certificate.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            // rustls errors describe the problem (unsupported key type, key not matching the
            // certificate), never the key itself.
            Error::Config(format!(
                "TLS certificate {} with key {}: {e}",
                paths.cert.display(),
                paths.key.display()
            ))
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The live TLS configuration of a listener and where it came from, so it can be reloaded from
/// the same files.
#[derive(Debug)]
pub struct Tls {
    paths: TlsPaths,
    config: RustlsConfig,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Tls {
    /// Loads the certificate and key; any problem is a configuration error before binding.
    pub fn load(paths: &TlsPaths) -> Result<Self> {
        let config = RustlsConfig::from_config(server_config(paths)?);
        Ok(Self {
            paths: paths.clone(),
            config,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The configuration the acceptor reads for every new handshake; a reload swaps what it holds.
    pub fn rustls_config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Rereads the files and swaps the configuration for new connections; existing connections
    /// keep theirs. On any error the previous certificate stays in use (a half-written renewal
    /// must not take the gateway off the air), the failure is logged with its running count and
    /// returned.
    pub async fn reload(&self, trigger: &str) -> Result<()> {
        let paths = self.paths.clone();
        let built = tokio::task::spawn_blocking(move || server_config(&paths))
            .await
            .map_err(|e| Error::Internal(format!("TLS reload task: {e}")))
            .and_then(|r| r);
        match built {
            Ok(config) => {
                self.config.reload_from_config(config);
                let ok = self.reloads_ok.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    trigger,
                    cert = %self.paths.cert.display(),
                    tls_reloads_ok = ok,
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(error) => {
                let failed = self.reloads_failed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    %error,
                    trigger,
                    tls_reloads_failed = failed,
                    "TLS reload refused; the previous certificate stays active"
                );
                Err(error)
            }
        }
    }

    /// Successful and failed reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (TlsPaths, rcgen::CertifiedKey<rcgen::KeyPair>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let paths = TlsPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&paths.cert, ck.cert.pem()).unwrap();
        std::fs::write(&paths.key, ck.signing_key.serialize_pem()).unwrap();
        (paths, ck)
    }

    fn config_error(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Config(m)) => m,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn plain_http_is_the_default_only_on_loopback() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            plain_http_mode(at("127.0.0.1:8080"), false).unwrap(),
            PlainHttp::Loopback
        );
        assert_eq!(
            plain_http_mode(at("[::1]:8080"), false).unwrap(),
            PlainHttp::Loopback
        );
        assert_eq!(
            plain_http_mode(at("[::ffff:127.0.0.1]:8080"), false).unwrap(),
            PlainHttp::Loopback
        );
        for addr in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let m = config_error(plain_http_mode(at(addr), false));
            assert!(m.contains("allow_plain_http"), "{m}");
            assert!(m.contains("PARAPET_ALLOW_PLAIN_HTTP"), "{m}");
            assert!(m.contains("tls_cert"), "{m}");
            assert_eq!(plain_http_mode(at(addr), true).unwrap(), PlainHttp::Allowed);
        }
    }

    #[test]
    fn loads_a_certificate_with_alpn_and_both_protocol_versions() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = self_signed(dir.path(), "a");
        let config = server_config(&paths).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        Tls::load(&paths).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (good, ck) = self_signed(dir.path(), "a");
        let key_pem = ck.signing_key.serialize_pem();

        let missing = TlsPaths {
            cert: dir.path().join("nope.crt"),
            key: good.key.clone(),
        };
        let m = config_error(server_config(&missing));
        assert!(m.contains("nope.crt") && m.contains("cannot read"), "{m}");

        // The key file given as the certificate: no certificate in it.
        let swapped = TlsPaths {
            cert: good.key.clone(),
            key: good.cert.clone(),
        };
        let m = config_error(server_config(&swapped));
        assert!(m.contains("no CERTIFICATE"), "{m}");

        // A certificate with the key of another one.
        let (other, _) = self_signed(dir.path(), "b");
        let mismatched = TlsPaths {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let m = config_error(server_config(&mismatched));
        assert!(m.contains("b.key"), "{m}");

        // Two keys in one file.
        let two = dir.path().join("two.key");
        std::fs::write(&two, format!("{key_pem}{key_pem}")).unwrap();
        let m = config_error(server_config(&TlsPaths {
            cert: good.cert.clone(),
            key: two,
        }));
        assert!(m.contains("more than one"), "{m}");

        // A truncated key: the message must not echo any of it.
        let broken = dir.path().join("broken.key");
        let cut = &key_pem[..key_pem.len() - 40];
        std::fs::write(&broken, cut).unwrap();
        let m = config_error(server_config(&TlsPaths {
            cert: good.cert.clone(),
            key: broken,
        }));
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for chunk in body.as_bytes().chunks(16) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!m.contains(chunk), "{m}");
        }
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, first) = self_signed(dir.path(), "a");
        let tls = Tls::load(&paths).unwrap();
        let before = tls.rustls_config().get_inner();

        std::fs::write(&paths.cert, "not a certificate").unwrap();
        assert!(tls.reload("test").await.is_err());
        assert!(Arc::ptr_eq(&before, &tls.rustls_config().get_inner()));
        assert_eq!(tls.reload_counts(), (0, 1));

        let second = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&paths.cert, second.cert.pem()).unwrap();
        std::fs::write(&paths.key, second.signing_key.serialize_pem()).unwrap();
        tls.reload("test").await.unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.rustls_config().get_inner()));
        assert_eq!(tls.reload_counts(), (1, 1));
        assert_ne!(first.cert.der(), second.cert.der());
    }
}
