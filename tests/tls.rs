//! TLS on both sides, with certificates made in the test (rcgen): clients on the TLS listener
//! (a rustls client and the real `redis-cli --tls`), a wrong CA and plain clients refused,
//! client certificates required when a client CA is set; and a cluster of TLS-only
//! `redis-server` nodes (`tls-cluster yes`, client certificates required) that the proxy
//! creates with its admin engine, refreshes and serves, all over TLS.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA and what it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    let cert = p.self_signed(&key).expect("CA certificate");
    (cert, key)
}

fn leaf(cn: &str, ca: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, &ca.0, &ca.1).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// `ca.pem` + `server.{pem,key}` + `client.{pem,key}` + `unlisted.{pem,key}` from one CA, and
/// `other-ca.pem` + `stranger.{pem,key}` from another. Each leaf's common name is its file name.
fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("pem");
    let good = ca("slotproxy test CA");
    let other = ca("some other CA");
    write("ca.pem", &good.0.pem());
    write("other-ca.pem", &other.0.pem());
    for (name, signer) in [
        ("server", &good),
        ("client", &good),
        ("unlisted", &good),
        ("stranger", &other),
    ] {
        let (cert, key) = leaf(name, signer);
        write(&format!("{name}.pem"), &cert);
        write(&format!("{name}.key"), &key);
    }
    Pki { dir }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs")
}

/// A rustls client config trusting `ca`, with the client certificate `ident` if given.
fn client_config(pki: &Pki, ca: &str, ident: Option<&str>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&pki.path(ca)) {
        roots.add(c).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match ident {
        None => b.with_no_client_auth(),
        Some(name) => b
            .with_client_auth_cert(
                certs(&pki.path(&format!("{name}.pem"))),
                rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key")))
                    .expect("key"),
            )
            .expect("client auth"),
    };
    Arc::new(cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects with TLS and completes the handshake (and, TLS 1.3 being what it is, one
/// round trip, since a refused client certificate is only reported after the handshake).
fn tls_connect(addr: &str, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let (s, pong) = tls_connect_ping(addr, cfg)?;
    assert_eq!(pong, "+PONG\r\n");
    Ok(s)
}

/// Like [`tls_connect`], returning whatever PING got (`-NOAUTH ...` when access control wants
/// a login).
fn tls_connect_ping(addr: &str, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<(Tls, String)> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let pong = roundtrip(&mut s, b"*1\r\n$4\r\nPING\r\n", 1)?;
    Ok((s, pong))
}

/// Writes `req` and reads until `replies` complete top-level replies arrived (simple lines
/// and bulk strings only, which is all these tests send back).
fn roundtrip(s: &mut Tls, req: &[u8], replies: usize) -> std::io::Result<String> {
    s.write_all(req)?;
    s.flush()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while count_replies(&out) < replies {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Complete replies at the start of `b` (simple/error/integer lines and bulk strings).
fn count_replies(b: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        let Some(end) = b[i..].windows(2).position(|w| w == b"\r\n") else {
            return n;
        };
        let line = &b[i..i + end];
        i += end + 2;
        if line.first() == Some(&b'$') {
            let len: i64 = std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(-1);
            if len >= 0 {
                let need = i + len as usize + 2;
                if b.len() < need {
                    return n;
                }
                i = need;
            }
        }
        n += 1;
    }
    n
}

fn tls_proxy_toml(pki: &Pki, tls_port: u16, client_ca: Option<&str>) -> String {
    let mut t = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.file("server.pem"),
        pki.file("server.key")
    );
    if let Some(ca) = client_ca {
        t.push_str(&format!("tls_client_ca_file = {:?}\n", pki.file(ca)));
    }
    t
}

#[test]
fn tls_clients_are_served_beside_plain_ones_and_wrong_peers_are_refused() {
    let cluster = cluster(1, 3, 0);
    let pki = pki();
    let tls_port = free_port();
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        &tls_proxy_toml(&pki, tls_port, None),
        true,
    );
    let tls_addr = format!("127.0.0.1:{tls_port}");

    // A TLS client: single commands, then a pipeline of large values in both directions, so
    // that reads and writes go through many TLS records and partial socket writes.
    let mut s = tls_connect(&tls_addr, client_config(&pki, "ca.pem", None)).expect("TLS client");
    let r = roundtrip(&mut s, b"*3\r\n$3\r\nSET\r\n$3\r\ntk1\r\n$2\r\nv1\r\n", 1).expect("SET");
    assert_eq!(r, "+OK\r\n");
    let big = "x".repeat(300 * 1024);
    let mut req = Vec::new();
    for i in 0..20 {
        let key = format!("tbig{i}");
        req.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{big}\r\n",
                key.len(),
                big.len()
            )
            .as_bytes(),
        );
    }
    for i in 0..20 {
        let key = format!("tbig{i}");
        req.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    let r = roundtrip(&mut s, &req, 40).expect("pipeline");
    assert_eq!(r.matches("+OK\r\n").count(), 20);
    assert_eq!(r.matches(&big).count(), 20, "every GET returns its value");

    // The same data through the plain listener: one proxy, two doors.
    let mut plain = proxy.conn();
    let v: String = redis::cmd("GET").arg("tk1").query(&mut plain).expect("GET");
    assert_eq!(v, "v1");

    // The real redis-cli over TLS, verifying the proxy's certificate against the CA.
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &pki.file("ca.pem"), "-h", "127.0.0.1"])
        .args(["-p", &tls_port.to_string(), "GET", "tk1"])
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v1",
        "redis-cli --tls: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A client that trusts another CA refuses the proxy's certificate.
    let e = match tls_connect(&tls_addr, client_config(&pki, "other-ca.pem", None)) {
        Ok(_) => panic!("a client trusting another CA must refuse the proxy"),
        Err(e) => e,
    };
    assert!(
        e.to_string().to_lowercase().contains("certificate"),
        "wrong CA: {e}"
    );

    // A plain client on the TLS port gets no reply, just a closed connection.
    let before = metric(&proxy.scrape(), "slotproxy_tls_handshake_failures_total");
    let mut raw = TcpStream::connect(&tls_addr).expect("plain connect");
    let (reply, closed) = raw_exchange(&mut raw, b"PING\r\n", Duration::from_secs(10));
    assert!(closed, "plain client on the TLS port must be closed");
    assert!(
        !reply.contains("PONG"),
        "no plain reply on the TLS port: {reply:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy.scrape(), "slotproxy_tls_handshake_failures_total") < before + 1.0 {
        assert!(Instant::now() < deadline, "handshake failure not counted");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A client that connects and never starts its handshake is closed (after the handshake
    // deadline; 30 s here is only a bound for the test).
    let mut idle = TcpStream::connect(&tls_addr).expect("idle connect");
    let (_, closed) = raw_exchange(&mut idle, b"", Duration::from_secs(30));
    assert!(closed, "a client that never handshakes must be closed");

    // And the TLS client is still being served.
    let r = roundtrip(&mut s, b"*2\r\n$3\r\nGET\r\n$3\r\ntk1\r\n", 1).expect("GET");
    assert_eq!(r, "$2\r\nv1\r\n");
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let cluster = cluster(1, 3, 0);
    let pki = pki();
    let tls_port = free_port();
    let toml = tls_proxy_toml(&pki, tls_port, Some("ca.pem"));
    let _proxy = Proxy::start_with(&cluster.seeds(), &toml, true);
    let addr = format!("127.0.0.1:{tls_port}");
    let mut ok = tls_connect(&addr, client_config(&pki, "ca.pem", Some("client")))
        .expect("a client with a certificate from the CA");
    let r = roundtrip(&mut ok, b"*2\r\n$4\r\nINCR\r\n$4\r\ntcnt\r\n", 1).expect("INCR");
    assert_eq!(r, ":1\r\n");
    assert!(
        tls_connect(&addr, client_config(&pki, "ca.pem", None)).is_err(),
        "a client without a certificate must be refused"
    );
    assert!(
        tls_connect(&addr, client_config(&pki, "ca.pem", Some("stranger"))).is_err(),
        "a certificate from another CA must be refused"
    );
}

/// Waits until the proxy serves every slot (a liveness bound, not a timing assertion).
fn wait_all_slots(c: &mut redis::Connection) {
    eventually("every slot to be covered", Duration::from_secs(60), || {
        serves_all_slots(c)
    });
}

/// A TLS-only redis-server (no plain port), stopped by PID when dropped.
struct TlsNode {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_node(pki: &Pki) -> TlsNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = slotproxy::admin::localcluster::alloc_port("127.0.0.1").expect("port");
    let child =
        Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
            .current_dir(dir.path())
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", &pki.file("server.pem")])
            .args(["--tls-key-file", &pki.file("server.key")])
            .args(["--tls-ca-cert-file", &pki.file("ca.pem")])
            .args(["--tls-auth-clients", "yes", "--tls-cluster", "yes"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--appendonly", "no", "--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server with TLS");
    let node = TlsNode {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_cli(pki, port, &["PING"]) != "PONG" {
        assert!(Instant::now() < deadline, "TLS node {port} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    node
}

/// Proxy settings for TLS to the nodes, trusting `ca`, with the client certificate.
fn backend_tls_toml(pki: &Pki, ca: &str) -> String {
    format!(
        "backend_tls = true\nbackend_tls_ca_file = {:?}\nbackend_tls_cert_file = {:?}\nbackend_tls_key_file = {:?}\n",
        pki.file(ca),
        pki.file("client.pem"),
        pki.file("client.key")
    )
}

/// redis-cli over TLS to a node, with the client certificate.
fn node_cli(pki: &Pki, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &pki.file("ca.pem")])
        .args([
            "--cert",
            &pki.file("client.pem"),
            "--key",
            &pki.file("client.key"),
        ])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_tls_only_cluster_is_created_refreshed_and_served_over_tls() {
    let pki = pki();
    let nodes: Vec<TlsNode> = (0..3).map(|_| tls_node(&pki)).collect();
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let toml = backend_tls_toml(&pki, "ca.pem");
    let proxy = Proxy::start_with(&seeds, &toml, false);
    let mut c = proxy.conn();

    // The admin engine talks to the nodes over TLS.
    let mut create = vec!["CREATE", "REPLICAS", "0", "NODES"];
    create.extend(seeds.iter().map(String::as_str));
    let out: Vec<String> = proxy_query(&mut c, &create).expect("PROXY CREATE over TLS");
    assert!(!out.is_empty());

    // The refresher learns the slots over TLS.
    wait_all_slots(&mut c);

    // The data path: keys on every master, a multi-key split, a transaction (dedicated
    // connection) and a blocking pop.
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET over TLS");
    }
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let vals: Vec<i64> = redis::cmd("MGET").arg(&keys).query(&mut c).expect("MGET");
    assert_eq!(vals, (0..200).collect::<Vec<i64>>());
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg("{t}n")
        .arg(5)
        .query(&mut c)
        .expect("MULTI/EXEC");
    assert_eq!(n, 5);
    let _: () = redis::cmd("RPUSH")
        .arg("q")
        .arg("job")
        .query(&mut c)
        .expect("RPUSH");
    let popped: Vec<String> = redis::cmd("BLPOP")
        .arg("q")
        .arg(1)
        .query(&mut c)
        .expect("BLPOP");
    assert_eq!(popped, vec!["q".to_string(), "job".to_string()]);

    // A value far larger than a TLS record and a socket buffer, both ways.
    let big = "y".repeat(3 * 1024 * 1024);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .expect("SET big");
    let back: String = redis::cmd("GET").arg("big").query(&mut c).expect("GET big");
    assert!(back == big, "the large value came back changed");

    // Every master holds some of the keys: the data really went to all three over TLS.
    for n in &nodes {
        let count: i64 = node_cli(&pki, n.port, &["DBSIZE"]).parse().expect("DBSIZE");
        assert!(count > 0, "node {} holds no key", n.port);
    }
    let _ = proxy;
}

#[test]
fn nodes_with_an_untrusted_certificate_are_reported_not_served() {
    let pki = pki();
    let node = tls_node(&pki);
    // The proxy trusts a CA that did not sign the node's certificate.
    let seed = format!("127.0.0.1:{}", node.port);
    let toml = backend_tls_toml(&pki, "other-ca.pem");
    let proxy = Proxy::start_with(std::slice::from_ref(&seed), &toml, false);
    let mut c = proxy.conn();
    let e = proxy_query::<Vec<String>>(&mut c, &["CHECK"])
        .map(|v| v.join("\n"))
        .unwrap_or_else(|e| e.to_string());
    assert!(
        e.to_lowercase().contains("certificate"),
        "PROXY CHECK must name the certificate problem: {e}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().to_lowercase().contains("certificate") {
        assert!(
            Instant::now() < deadline,
            "the refresher must log the certificate problem: {}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sighup_renews_certificates_in_place_and_bad_files_change_nothing() {
    let cluster = cluster(1, 3, 0);
    let (old, new) = (pki(), pki());
    // The proxy reads its certificate from files an operator renews in place.
    let live = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    let install = |from: &Pki| {
        std::fs::copy(from.path("server.pem"), &cert).expect("copy cert");
        std::fs::copy(from.path("server.key"), &key).expect("copy key");
    };
    install(&old);
    let tls_port = free_port();
    let toml = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let proxy = Proxy::start_with(&cluster.seeds(), &toml, true);
    let addr = format!("127.0.0.1:{tls_port}");
    let mut open =
        tls_connect(&addr, client_config(&old, "ca.pem", None)).expect("old certificate");

    install(&new);
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tls_connect(&addr, client_config(&new, "ca.pem", None)).is_err() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not renew the certificate: {}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tls_connect(&addr, client_config(&old, "ca.pem", None)).is_err(),
        "new connections get the new certificate only"
    );
    let r = roundtrip(&mut open, b"*1\r\n$4\r\nPING\r\n", 1).expect("open connection");
    assert_eq!(
        r, "+PONG\r\n",
        "a connection opened before the renewal keeps working"
    );

    // A broken file: the reload is refused and the renewed certificate stays in force.
    std::fs::write(&cert, "not a certificate").expect("break cert");
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.log().contains("TLS configuration not reloaded") {
        assert!(
            Instant::now() < deadline,
            "the failed reload must be logged: {}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tls_connect(&addr, client_config(&new, "ca.pem", None)).expect("still the renewed certificate");

    // The same through PROXY CONFIG SET: a file that does not load is refused with its setting's
    // name, and nothing changes.
    let mut c = proxy.conn();
    let e = proxy_query::<String>(
        &mut c,
        &["CONFIG", "SET", "tls_cert_file", "/nonexistent/cert.pem"],
    )
    .expect_err("a missing certificate file must be refused");
    assert!(e.to_string().contains("tls_cert_file"), "{e}");
    let now: Vec<String> =
        proxy_query(&mut c, &["CONFIG", "GET", "tls_cert_file"]).expect("CONFIG GET");
    assert_eq!(now.get(1), Some(&cert.display().to_string()));
    tls_connect(&addr, client_config(&new, "ca.pem", None)).expect("unchanged");
}

#[test]
fn a_client_certificate_logs_in_as_the_user_that_lists_its_name() {
    let cluster = cluster(1, 3, 0);
    let pki = pki();
    let tls_port = free_port();
    let toml = format!(
        "{}[[users]]\nname = \"svc\"\nlevel = \"write\"\nwrite_prefixes = [\"svc:\"]\ncertificate_names = [\"client\"]\n\n[[users]]\nname = \"admin\"\npassword = \"adm\"\nlevel = \"admin\"\n",
        tls_proxy_toml(&pki, tls_port, Some("ca.pem"))
    );
    let proxy = Proxy::start_with(&cluster.seeds(), &toml, false);
    let mut admin = redis::Client::open(format!("redis://admin:adm@{}/", proxy.addr))
        .and_then(|c| c.get_connection())
        .expect("admin login");
    wait_all_slots(&mut admin);
    let addr = format!("127.0.0.1:{tls_port}");

    // CN=client is listed by user svc: logged in as svc without AUTH, with svc's namespace.
    let mut svc = tls_connect(&addr, client_config(&pki, "ca.pem", Some("client"))).expect("svc");
    let ok = roundtrip(
        &mut svc,
        b"*3\r\n$3\r\nSET\r\n$5\r\nsvc:k\r\n$1\r\nv\r\n",
        1,
    )
    .expect("SET");
    assert_eq!(ok, "+OK\r\n");
    let denied = roundtrip(
        &mut svc,
        b"*3\r\n$3\r\nSET\r\n$5\r\nadm:k\r\n$1\r\nv\r\n",
        1,
    )
    .expect("SET");
    assert!(
        denied.starts_with("-NOPERM"),
        "outside svc's namespace: {denied}"
    );

    // A certificate from the same CA whose name no user lists: verified, but not logged in.
    let (_, noauth) = tls_connect_ping(&addr, client_config(&pki, "ca.pem", Some("unlisted")))
        .expect("unlisted certificate still passes the handshake");
    assert!(noauth.starts_with("-NOAUTH"), "{noauth}");

    // The certificate user has no password: AUTH as it always fails.
    let wrong =
        roundtrip(&mut svc, b"*3\r\n$4\r\nAUTH\r\n$3\r\nsvc\r\n$0\r\n\r\n", 1).expect("AUTH");
    assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
}
