//! TLS settings turned into rustls configurations: the client-facing acceptor (`tls_listen`,
//! certificate, key, optional client-certificate verification) and the node-facing connector
//! (`backend_tls`, CA, server name, optional client certificate), held by a [`Tls`] value.
//!
//! Invariants: every file is read and checked before it is used, at start-up (a bad path or a
//! key that does not match its certificate stops the proxy with a message naming the setting,
//! never the first client) and at each reload (SIGHUP, `PROXY CONFIG SET` of a file setting),
//! where a file that does not load leaves the running configuration in place and the change is
//! refused whole. There is one [`Tls`] per running proxy, built at start-up from its config and
//! owned by it (two proxies in one process never see each other's certificates); a reload
//! replaces both configurations whole. Each new connection takes the current one
//! ([`Tls::acceptor`] for clients, [`Tls::backend`] through the proxy's
//! [`crate::net::dialer::Dialer`] for every place that connects to a node); connections already
//! open keep theirs.

use crate::config::Config;
use anyhow::{anyhow, bail, Context};
use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{setting}: reading {path}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting}: {path} is not a PEM certificate file"))?;
    if certs.is_empty() {
        bail!("{setting}: {path} holds no certificate");
    }
    Ok(certs)
}

fn key(path: &str, setting: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("{setting}: {path} holds no PEM private key"))
}

fn roots(path: &str, setting: &str) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path, setting)? {
        store
            .add(c)
            .with_context(|| format!("{setting}: a certificate in {path} is not a usable CA"))?;
    }
    Ok(Arc::new(store))
}

/// Builds the acceptor for the TLS listener, when `tls_listen` is set.
pub fn acceptor_config(cfg: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    if cfg.tls_listen.is_empty() {
        return Ok(None);
    }
    if cfg.tls_cert_file.is_empty() || cfg.tls_key_file.is_empty() {
        bail!("tls_listen is set: tls_cert_file and tls_key_file are required");
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if cfg.tls_client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&cfg.tls_client_ca_file, "tls_client_ca_file")?,
            provider(),
        )
        .build()
        .map_err(|e| anyhow!("tls_client_ca_file: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(
            certs(&cfg.tls_cert_file, "tls_cert_file")?,
            key(&cfg.tls_key_file, "tls_key_file")?,
        )
        .map_err(|e| anyhow!("tls_cert_file / tls_key_file: {e}"))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// How the proxy speaks TLS to the nodes.
pub struct BackendTls {
    /// The rustls client side.
    pub connector: tokio_rustls::TlsConnector,
    /// `backend_tls_server_name`: the name every node's certificate is checked against; when
    /// unset, the host part of the node's address (a name or an IP address).
    pub name: Option<ServerName<'static>>,
}

impl BackendTls {
    /// The name to verify a node at `addr` (`host:port`) against.
    pub fn server_name(&self, addr: &str) -> io::Result<ServerName<'static>> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a TLS server name ({e}); set backend_tls_server_name"),
            )
        })
    }
}

/// Builds the node-facing TLS configuration from the settings (`None` when `backend_tls` is
/// off).
pub fn backend_config(cfg: &Config) -> anyhow::Result<Option<BackendTls>> {
    if !cfg.backend_tls {
        return Ok(None);
    }
    let roots = if cfg.backend_tls_ca_file.is_empty() {
        bail!("backend_tls is on: backend_tls_ca_file is required (the CA that signed the nodes' certificates)");
    } else {
        roots(&cfg.backend_tls_ca_file, "backend_tls_ca_file")?
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (
        cfg.backend_tls_cert_file.is_empty(),
        cfg.backend_tls_key_file.is_empty(),
    ) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => builder
            .with_client_auth_cert(
                certs(&cfg.backend_tls_cert_file, "backend_tls_cert_file")?,
                key(&cfg.backend_tls_key_file, "backend_tls_key_file")?,
            )
            .map_err(|e| anyhow!("backend_tls_cert_file / backend_tls_key_file: {e}"))?,
        _ => {
            bail!("backend_tls_cert_file and backend_tls_key_file go together: set both or neither")
        }
    };
    let name = if cfg.backend_tls_server_name.is_empty() {
        None
    } else {
        Some(
            ServerName::try_from(cfg.backend_tls_server_name.clone())
                .map_err(|e| anyhow!("backend_tls_server_name: {e}"))?,
        )
    };
    Ok(Some(BackendTls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    }))
}

/// One running proxy's TLS configurations, both sides; each `None` while that side is off.
/// Replaced whole on reload, read lock-free by each new connection.
pub struct Tls {
    acceptor: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    backend: ArcSwapOption<BackendTls>,
}

impl Tls {
    /// TLS off on both sides, whatever a config says (tests and tools that speak plain TCP).
    pub fn off() -> Tls {
        Tls {
            acceptor: ArcSwapOption::const_empty(),
            backend: ArcSwapOption::const_empty(),
        }
    }

    /// The configurations `cfg` asks for, every file read and checked now (start-up).
    pub fn load(cfg: &Config) -> anyhow::Result<Tls> {
        let tls = Tls::off();
        tls.install(cfg)?;
        Ok(tls)
    }

    /// Reads every TLS file `cfg` names and, only if all of them load, makes the result the
    /// configuration new connections use (both sides at once, or neither).
    pub fn install(&self, cfg: &Config) -> anyhow::Result<()> {
        let acceptor = acceptor_config(cfg)?;
        let backend = backend_config(cfg)?;
        self.acceptor.store(acceptor.map(Arc::new));
        self.backend.store(backend.map(Arc::new));
        Ok(())
    }

    /// The acceptor new TLS clients get, if the TLS listener is on.
    pub fn acceptor(&self) -> Option<Arc<tokio_rustls::TlsAcceptor>> {
        self.acceptor.load_full()
    }

    /// The node-facing TLS configuration new node connections use, if TLS to the nodes is on.
    pub fn backend(&self) -> Option<Arc<BackendTls>> {
        self.backend.load_full()
    }
}

/// The names a client certificate (DER) carries: its subject common names and DNS subject
/// alternative names, for matching users' `certificate_names`. Empty if it does not parse (it
/// was verified by rustls already, so that means names in a form this does not read).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// Whether the TLS files of `a` and `b` differ (a reload must rebuild the configurations).
pub fn settings_differ(a: &Config, b: &Config) -> bool {
    a.tls_cert_file != b.tls_cert_file
        || a.tls_key_file != b.tls_key_file
        || a.tls_client_ca_file != b.tls_client_ca_file
        || a.backend_tls_ca_file != b.backend_tls_ca_file
        || a.backend_tls_cert_file != b.backend_tls_cert_file
        || a.backend_tls_key_file != b.backend_tls_key_file
        || a.backend_tls_server_name != b.backend_tls_server_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector_only() -> BackendTls {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        BackendTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: None,
        }
    }

    #[test]
    fn server_names_come_from_the_address_unless_set() {
        let mut t = connector_only();
        let n = t.server_name("127.0.0.2:7000").expect("ip");
        assert_eq!(n.to_str(), "127.0.0.2");
        assert_eq!(
            t.server_name("redis-1.internal:6379")
                .expect("dns")
                .to_str(),
            "redis-1.internal"
        );
        assert_eq!(t.server_name("[::1]:6379").expect("v6").to_str(), "::1");
        t.name = Some(ServerName::try_from("cluster.example").expect("name"));
        assert_eq!(
            t.server_name("127.0.0.2:7000").expect("set").to_str(),
            "cluster.example"
        );
    }

    #[test]
    fn certificate_names_are_the_common_name_and_dns_alternative_names() {
        let mut p = rcgen::CertificateParams::new(vec!["app-1.clients.example".to_string()])
            .expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "app-1");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("cert");
        assert_eq!(
            certificate_names(cert.der()),
            vec!["app-1".to_string(), "app-1.clients.example".to_string()]
        );
        assert!(certificate_names(b"not a certificate").is_empty());
    }

    #[test]
    fn each_tls_value_is_its_own_and_a_failed_reload_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("writing the CA");
        let on = Config {
            backend_tls: true,
            backend_tls_ca_file: ca_file.display().to_string(),
            ..Config::default()
        };
        let a = Tls::load(&on).expect("loads");
        let b = Tls::off();
        assert!(a.backend().is_some() && b.backend().is_none());
        // A file that does not load refuses the change whole: the running one stays.
        let broken = Config {
            backend_tls_ca_file: "/nonexistent/ca.pem".into(),
            ..on.clone()
        };
        assert!(a.install(&broken).is_err());
        assert!(a.backend().is_some());
        // Turning one proxy's TLS off does not reach another's.
        b.install(&on).expect("loads");
        a.install(&Config::default()).expect("off");
        assert!(a.backend().is_none() && b.backend().is_some());
    }

    #[test]
    fn missing_files_name_the_setting() {
        let cfg = Config {
            tls_listen: "127.0.0.1:0".into(),
            tls_cert_file: "/nonexistent/cert.pem".into(),
            tls_key_file: "/nonexistent/key.pem".into(),
            ..Config::default()
        };
        let e = format!("{:#}", acceptor_config(&cfg).err().expect("error"));
        assert!(e.contains("tls_cert_file"), "{e}");
        let cfg = Config {
            backend_tls: true,
            ..Config::default()
        };
        let e = format!("{:#}", backend_config(&cfg).err().expect("error"));
        assert!(e.contains("backend_tls_ca_file"), "{e}");
    }
}
