//! The certificate and key being served: read from PEM files at start-up and again on SIGHUP,
//! with the fingerprint the banner prints and the DNS names the `/ws` Host check accepts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::stream::TlsStream;
use super::transport::Transport;

/// The TLS configuration new connections get; replaced as a whole on [`TlsAcceptor::reload`].
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    cert_path: PathBuf,
    key_path: PathBuf,
    fingerprint: String,
    /// The DNS names (wildcards included) of the end-entity certificate's subjectAltName.
    dns_names: Vec<String>,
}

impl TlsAcceptor {
    /// Reads a PEM certificate chain (end-entity first) and its PEM private key (PKCS#8, PKCS#1
    /// or SEC1; RSA, ECDSA or Ed25519). Errors name the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        let (config, fingerprint, dns_names) = server_config(cert, key)?;
        Ok(TlsAcceptor {
            config: Arc::new(config),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            fingerprint,
            dns_names,
        })
    }

    /// Re-reads both files (SIGHUP after a renewal). On error the old configuration stays in
    /// use. Connections that exist keep the configuration they started with; new ones get the
    /// new one.
    pub fn reload(&mut self) -> Result<(), String> {
        let (config, fingerprint, dns_names) = server_config(&self.cert_path, &self.key_path)?;
        self.config = Arc::new(config);
        self.fingerprint = fingerprint;
        self.dns_names = dns_names;
        Ok(())
    }

    /// Wraps a freshly accepted socket; nothing is read until the loop says it is readable.
    pub fn accept(&self, tcp: TcpStream) -> Transport {
        Transport::Tls(Box::new(TlsStream::new(tcp, Arc::clone(&self.config))))
    }

    /// The SHA-256 fingerprint of the certificate being served, as browsers show it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The DNS names the certificate being served is for (its IP addresses are left out: the
    /// Host check accepts every IP literal anyway).
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
}

/// The DNS names in the subjectAltName of `cert`, lower-cased; none when it cannot be parsed
/// (rustls then refuses it anyway, or the Host check falls back to `--public-host`).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => parsed
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The server configuration for a certificate chain and key, with the end-entity certificate's
/// fingerprint and DNS names.
fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(ServerConfig, String, Vec<String>), String> {
    let chain = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    let fingerprint = chain
        .first()
        .map(|cert| fingerprint(cert.as_ref()))
        .unwrap_or_default();
    let names = chain.first().map(dns_names).unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| describe_key_error(&e, cert_path, key_path))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, fingerprint, names))
}

pub(super) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = fs::read(path).map_err(|e| format!("certificate file {shown}: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file {shown}: unreadable PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate file {shown}: no certificate in it (expected PEM \
             -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let pem = fs::read(path).map_err(|e| format!("key file {shown}: {e}"))?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if CertificateDer::from_pem_slice(&pem).is_ok() => Err(
            format!("key file {shown}: holds a certificate, not a private key (swapped files?)"),
        ),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "key file {shown}: no private key in it (expected PEM -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)"
        )),
        Err(e) => Err(format!("key file {shown}: unreadable PEM: {e}")),
    }
}

fn describe_key_error(error: &rustls::Error, cert_path: &Path, key_path: &Path) -> String {
    match error {
        rustls::Error::InconsistentKeys(_) => format!(
            "key file {} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!(
                "certificate file {}: not a usable X.509 certificate ({error})",
                cert_path.display()
            )
        }
        rustls::Error::General(_) => format!(
            "key file {}: unsupported private key ({error}); use RSA, ECDSA P-256/P-384 or Ed25519",
            key_path.display()
        ),
        other => format!(
            "certificate {} with key {}: {other}",
            cert_path.display(),
            key_path.display()
        ),
    }
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex, the way browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_files::{temp_dir, write_pair};

    #[test]
    fn loads_a_matching_pair_and_reports_its_fingerprint() {
        let dir = temp_dir("good");
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(acceptor.fingerprint(), fingerprint(der.as_ref()));
        assert_eq!(acceptor.fingerprint().len(), 32 * 3 - 1);
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let dir = temp_dir("bad");
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let other = temp_dir("bad-other");
        let (_, other_key) = write_pair(other.path(), &["localhost"]);
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not PEM at all\n").unwrap();
        let cases: [(&Path, &Path, &[&str]); 6] = [
            (&missing, &key, &["missing.pem", "certificate file"]),
            (&cert, &missing, &["missing.pem", "key file"]),
            (&empty, &key, &["empty.pem", "no certificate"]),
            (&cert, &empty, &["empty.pem", "no private key"]),
            (&cert, &cert, &["cert.pem", "swapped"]),
            (&cert, &other_key, &["does not match", "cert.pem"]),
        ];
        for (cert_path, key_path, needles) in cases {
            let error = TlsAcceptor::load(cert_path, key_path)
                .err()
                .unwrap_or_else(|| panic!("{cert_path:?} + {key_path:?} loaded"));
            for needle in needles {
                assert!(error.contains(needle), "{error:?} lacks {needle:?}");
            }
            assert!(!error.contains('\n'), "{error:?}");
        }
    }

    #[test]
    fn the_certificate_s_dns_names_are_known_and_follow_a_reload() {
        let dir = temp_dir("names");
        let (cert, key) = write_pair(
            dir.path(),
            &["Chat.Example.org", "*.pi.example", "192.0.2.1"],
        );
        let mut acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        assert_eq!(acceptor.dns_names(), ["chat.example.org", "*.pi.example"]);
        write_pair(dir.path(), &["other.example"]);
        acceptor.reload().unwrap();
        assert_eq!(acceptor.dns_names(), ["other.example"]);
    }

    #[test]
    fn reload_keeps_the_old_configuration_on_error() {
        let dir = temp_dir("reload");
        let (cert, key) = write_pair(dir.path(), &["localhost"]);
        let mut acceptor = TlsAcceptor::load(&cert, &key).unwrap();
        let before = acceptor.fingerprint().to_string();
        fs::write(&key, "garbage").unwrap();
        assert!(acceptor.reload().is_err());
        assert_eq!(acceptor.fingerprint(), before);
        write_pair(dir.path(), &["localhost"]);
        acceptor.reload().unwrap();
        assert_ne!(acceptor.fingerprint(), before);
    }
}
