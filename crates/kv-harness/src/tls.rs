//! A throwaway certificate authority for local clusters and tests: a CA and, per node,
//! a certificate for 127.0.0.1 and `localhost` that allows both server and client
//! authentication, as `kvstore serve --tls-cert --tls-key --tls-ca` expects. For
//! development only: the CA key is written next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Where the files of a development PKI are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The directory holding everything.
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
}

impl DevPki {
    /// The certificate of `node` (PEM).
    pub fn cert(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.pem"))
    }

    /// The private key of `node`'s certificate (PEM).
    pub fn key(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}-key.pem"))
    }

    /// The `kvstore serve` flags that make `node` serve and dial over mutual TLS.
    pub fn serve_args(&self, node: &str) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert(node).display()),
            format!("--tls-key={}", self.key(node).display()),
            format!("--tls-ca={}", self.ca.display()),
        ]
    }
}

/// Creates a CA named `ca_name` in `dir` and a certificate for each of `nodes`.
pub fn create_dev_pki(dir: &Path, ca_name: &str, nodes: &[String]) -> Result<DevPki, String> {
    let failed = |what: &str, e: rcgen::Error| format!("cannot create the {what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| failed("CA", e))?;
    let pki = DevPki {
        dir: dir.to_owned(),
        ca: dir.join("ca.pem"),
    };
    write(&pki.ca, &ca.pem())?;
    write(&dir.join("ca-key.pem"), &ca_key_pem)?;
    for node in nodes {
        let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(hosts).map_err(|e| failed("certificate", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| failed("node key", e))?;
        let cert = params
            .signed_by(&key, &ca)
            .map_err(|e| failed("certificate", e))?;
        write(&pki.cert(node), &cert.pem())?;
        write(&pki.key(node), &key.serialize_pem())?;
    }
    Ok(pki)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
