//! Serving TLS (feature `tls`): the `http.tls` / `grpc.tls` settings read
//! into an acceptor for the listener in [`serve`](crate::serve), a
//! certificate that is swapped in place when its files change, and
//! client-certificate verification for mutual TLS.
//!
//! The certificate lives in a [`rustls::server::ResolvesServerCert`] that
//! every handshake asks, so a renewed pair is served to the next connection
//! while the connections already open keep theirs. A background task (one
//! per plug-in, stopped with it) looks at the files' modification time and
//! length every `reload_interval`; a pair that does not load is a warning
//! and the previous certificate stays.

use mamey_core::StartContext;
use mamey_core::config::{Config, ConfigError};

use crate::config::ServerTlsConfig;

/// The application protocols a listener offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// The web API: HTTP/2 and HTTP/1.1 on one port.
    Http,
    /// gRPC: HTTP/2 only.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    Grpc,
}

/// Reads a TLS section (`prefix` is `http.tls` or `grpc.tls`): `None` when
/// TLS is off, else the acceptor with the certificate loaded.
///
/// # Errors
/// A [`ConfigError`] naming the key: one of `cert_file` and `key_file` set
/// without the other, `client_ca_file` without both, a file that cannot be
/// read or holds no usable PEM (the message names the file, never its
/// content), or, without the `tls` feature, any of them set.
pub(crate) fn server_tls(
    config: &Config,
    tls: &ServerTlsConfig,
    prefix: &str,
    alpn: Alpn,
) -> Result<Option<ServerTls>, ConfigError> {
    let key = |name: &str| format!("{prefix}.{name}");
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => match tls.client_ca_file {
            Some(_) => Err(config.invalid(
                &key("client_ca_file"),
                "mutual TLS needs the server's own certificate too: set `cert_file` and `key_file`",
            )),
            None => Ok(None),
        },
        (Some(_), None) => Err(config.invalid(
            &key("key_file"),
            format!("`{prefix}.cert_file` is set without `{prefix}.key_file`: set both to serve TLS, or neither"),
        )),
        (None, Some(_)) => Err(config.invalid(
            &key("cert_file"),
            format!("`{prefix}.key_file` is set without `{prefix}.cert_file`: set both to serve TLS, or neither"),
        )),
        (Some(cert_file), Some(key_file)) => {
            imp::load(config, tls, prefix, cert_file, key_file, alpn).map(Some)
        }
    }
}

/// Runs the certificate watch of `tls`, if any, as a task of the plug-in,
/// until the plug-in stops.
pub(crate) fn watch_certificate(ctx: &StartContext, tls: Option<&ServerTls>) {
    if let Some(reload) = tls.and_then(ServerTls::reload) {
        let stop = ctx.shutdown_token();
        ctx.spawn("tls-reload", async move {
            reload.run(stop).await;
            Ok(())
        });
    }
}

pub(crate) use imp::ServerTls;
#[cfg(feature = "tls")]
use with_rustls as imp;
#[cfg(not(feature = "tls"))]
use without_feature as imp;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::loader("svc")
            .dir(std::env::temp_dir().join("mamey-http-tests-no-config"))
            .env_vars(Vec::<(String, String)>::new())
            .load()
            .unwrap()
    }

    fn error(tls: &ServerTlsConfig) -> String {
        match server_tls(&config(), tls, "http.tls", Alpn::Http) {
            Ok(_) => panic!("accepted {tls:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn tls_is_off_unless_configured_and_half_a_pair_is_an_error() {
        assert!(
            server_tls(
                &config(),
                &ServerTlsConfig::default(),
                "http.tls",
                Alpn::Http
            )
            .unwrap()
            .is_none()
        );
        let cert_only = ServerTlsConfig {
            cert_file: Some("/etc/tls.crt".to_owned()),
            ..ServerTlsConfig::default()
        };
        assert!(error(&cert_only).contains("`http.tls.key_file`"));
        let ca_only = ServerTlsConfig {
            client_ca_file: Some("/etc/ca.crt".to_owned()),
            ..ServerTlsConfig::default()
        };
        assert!(error(&ca_only).contains("`http.tls.client_ca_file`"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_is_a_configuration_error() {
        let pair = ServerTlsConfig {
            cert_file: Some("/etc/tls.crt".to_owned()),
            key_file: Some("/etc/tls.key".to_owned()),
            ..ServerTlsConfig::default()
        };
        let error = error(&pair);
        assert!(
            error.contains("`http.tls.cert_file`") && error.contains("`tls` feature"),
            "{error}"
        );
    }
}

#[cfg(feature = "tls")]
mod with_rustls {
    use std::fmt;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::{Arc, PoisonError, RwLock};
    use std::time::{Duration, SystemTime};

    use mamey_core::config::{Config, ConfigError};
    use rustls::RootCertStore;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
    use rustls::sign::CertifiedKey;
    use tokio::net::TcpStream;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::Alpn;
    use crate::config::ServerTlsConfig;

    /// A connection after its TLS handshake.
    pub(crate) type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

    /// A listener's TLS: the acceptor, and the watch that reloads its
    /// certificate. Cheap to clone.
    #[derive(Clone)]
    pub(crate) struct ServerTls {
        acceptor: tokio_rustls::TlsAcceptor,
        reload: Option<Arc<Reload>>,
    }

    impl ServerTls {
        /// Runs the TLS handshake on a new connection from `peer`, to be
        /// done by `deadline`; `None` (logged) when it fails or is late.
        pub(crate) async fn handshake(
            &self,
            stream: TcpStream,
            peer: SocketAddr,
            deadline: Instant,
        ) -> Option<TlsStream> {
            match tokio::time::timeout_at(deadline, self.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some(stream),
                // A client's mistake (or a scan): not worth more than debug.
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "connection closed: no TLS handshake within its deadline");
                    None
                }
            }
        }

        /// The certificate watch, when `reload_interval` is not `0s`.
        pub(super) fn reload(&self) -> Option<Arc<Reload>> {
            self.reload.clone()
        }
    }

    /// Builds the acceptor: rustls with the ring provider, the ALPN
    /// protocols, client verification when `client_ca_file` is set.
    pub(super) fn load(
        config: &Config,
        tls: &ServerTlsConfig,
        prefix: &str,
        cert_file: &str,
        key_file: &str,
        alpn: Alpn,
    ) -> Result<ServerTls, ConfigError> {
        let key = |name: &str| format!("{prefix}.{name}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Taken before reading, so that a change made while reading is seen
        // by the first check.
        let stamp = Stamp::of(cert_file, key_file);
        let certified = certified_key(cert_file, key_file, &provider)
            .map_err(|(name, message)| config.invalid(&key(name), message))?;
        let resolver = Arc::new(CertResolver(RwLock::new(Arc::new(certified))));
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| config.invalid(prefix, format!("no TLS version to offer: {e}")))?;
        let builder = match &tls.client_ca_file {
            Some(path) => {
                let roots = client_roots(path)
                    .map_err(|message| config.invalid(&key("client_ca_file"), message))?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| config.invalid(&key("client_ca_file"), format!("`{path}`: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server =
            builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = match alpn {
            Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Grpc => vec![b"h2".to_vec()],
        };
        let reload = (!tls.reload_interval.is_zero()).then(|| {
            Arc::new(Reload {
                prefix: prefix.to_owned(),
                cert_file: cert_file.to_owned(),
                key_file: key_file.to_owned(),
                interval: tls.reload_interval,
                provider,
                resolver,
                stamp,
            })
        });
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            reload,
        })
    }

    /// The certificate every handshake is answered with; swapped whole when
    /// the files change.
    struct CertResolver(RwLock<Arc<CertifiedKey>>);

    impl CertResolver {
        fn current(&self) -> Arc<CertifiedKey> {
            Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
        }

        fn replace(&self, certified: CertifiedKey) {
            *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        }
    }

    impl fmt::Debug for CertResolver {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // The chain's length only: never the key.
            f.debug_struct("CertResolver")
                .field("certificates", &self.current().cert.len())
                .finish_non_exhaustive()
        }
    }

    impl ResolvesServerCert for CertResolver {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.current())
        }
    }

    /// The files' modification times and lengths, as last seen; `None` for
    /// a file that could not be looked at (moved away mid-rotation, say).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Stamp([Option<(SystemTime, u64)>; 2]);

    impl Stamp {
        fn of(cert_file: &str, key_file: &str) -> Self {
            let one = |path: &str| {
                let metadata = std::fs::metadata(path).ok()?;
                Some((metadata.modified().ok()?, metadata.len()))
            };
            Self([one(cert_file), one(key_file)])
        }
    }

    /// Watches a certificate's files and swaps a changed pair in.
    pub(crate) struct Reload {
        prefix: String,
        cert_file: String,
        key_file: String,
        interval: Duration,
        provider: Arc<CryptoProvider>,
        resolver: Arc<CertResolver>,
        /// The stamp of the pair loaded at start.
        stamp: Stamp,
    }

    impl Reload {
        /// Checks the files every interval until `stop` is cancelled.
        pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the files were just read.
            ticks.tick().await;
            let mut seen = self.stamp;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let this = Arc::clone(&self);
                // Reading files blocks: off the runtime's workers, in the
                // service's scope, so what it logs is this service's.
                let scope = mamey_core::ServiceScope::current();
                let check = move || match scope {
                    Some(scope) => scope.sync_scope(|| this.check(seen)),
                    None => this.check(seen),
                };
                match tokio::task::spawn_blocking(check).await {
                    Ok(now) => seen = now,
                    Err(error) => tracing::warn!(%error, "checking the TLS certificate failed"),
                }
            }
        }

        /// Loads the pair when its stamp differs from `last`; the stamp now.
        pub(super) fn check(&self, last: Stamp) -> Stamp {
            let now = Stamp::of(&self.cert_file, &self.key_file);
            if now == last {
                return now;
            }
            match certified_key(&self.cert_file, &self.key_file, &self.provider) {
                Ok(certified) => {
                    self.resolver.replace(certified);
                    tracing::info!(
                        cert_file = %self.cert_file,
                        "TLS certificate reloaded; new connections get the new one"
                    );
                }
                // A half-written pair (the certificate renewed, the key not
                // yet) lands here too: the next change is looked at again.
                Err((name, error)) => tracing::warn!(
                    key = %format!("{}.{name}", self.prefix),
                    %error,
                    "the changed TLS certificate did not load; still serving the previous one"
                ),
            }
            now
        }
    }

    /// Reads the chain and its key; on failure the key name (`cert_file` or
    /// `key_file`) and a message naming the file, not its content.
    fn certified_key(
        cert_file: &str,
        key_file: &str,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, (&'static str, String)> {
        let chain = certificates(cert_file).map_err(|message| ("cert_file", message))?;
        let pem = read(key_file).map_err(|message| ("key_file", message))?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            let problem = match e {
                pem::Error::NoItemsFound => "no PEM private key (PKCS#8, RSA or SEC1) found",
                _ => "not valid PEM",
            };
            ("key_file", format!("`{key_file}`: {problem}"))
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|e| {
            let problem = match e {
                rustls::Error::InconsistentKeys(_) => "does not belong to".to_owned(),
                e => format!("is not usable ({e}) with"),
            };
            (
                "key_file",
                format!(
                    "the private key in `{key_file}` {problem} the certificate in `{cert_file}`"
                ),
            )
        })
    }

    /// The certificates of a PEM file, at least one.
    fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(path)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("`{path}`: not valid PEM"))?;
        if chain.is_empty() {
            return Err(format!("`{path}`: no PEM certificate found"));
        }
        Ok(chain)
    }

    fn client_roots(path: &str) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for certificate in certificates(path)? {
            roots
                .add(certificate)
                .map_err(|e| format!("`{path}`: {e}"))?;
        }
        Ok(roots)
    }

    fn read(path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(Path::new(path)).map_err(|e| format!("cannot read `{path}`: {e}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn pair(name: &str) -> (String, String) {
            let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            (certified.cert.pem(), certified.key_pair.serialize_pem())
        }

        #[test]
        fn a_changed_pair_is_swapped_in_and_a_broken_one_is_not() {
            let temp = tempfile::tempdir().unwrap();
            let dir = temp.path();
            let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
            let (cert_file, key_file) = (
                cert_file.to_str().unwrap().to_owned(),
                key_file.to_str().unwrap().to_owned(),
            );
            let write = |(cert, key): &(String, String)| {
                std::fs::write(&cert_file, cert).unwrap();
                std::fs::write(&key_file, key).unwrap();
            };
            let first = pair("first.localhost");
            write(&first);
            let config = ServerTlsConfig {
                cert_file: Some(cert_file.clone()),
                key_file: Some(key_file.clone()),
                ..ServerTlsConfig::default()
            };
            let tls = load(
                &Config::loader("svc")
                    .dir(dir)
                    .env_vars(Vec::<(String, String)>::new())
                    .load()
                    .unwrap(),
                &config,
                "http.tls",
                &cert_file,
                &key_file,
                Alpn::Http,
            )
            .unwrap();
            let reload = tls.reload().unwrap();
            let served = || reload.resolver.current().cert[0].clone();
            let original = served();

            // A key that is not PEM: the previous certificate stays.
            std::fs::write(&key_file, "not a key, and longer than before").unwrap();
            let stamp = reload.check(reload.stamp);
            assert_eq!(served(), original);
            // Unchanged since: not even looked at again.
            assert_eq!(reload.check(stamp), stamp);

            let second = pair("second-certificate.localhost");
            write(&second);
            reload.check(stamp);
            assert_ne!(served(), original);
            assert_eq!(
                served().as_ref(),
                CertificateDer::from_pem_slice(second.0.as_bytes())
                    .unwrap()
                    .as_ref()
            );
        }
    }
}

#[cfg(not(feature = "tls"))]
mod without_feature {
    use mamey_core::config::{Config, ConfigError};
    use tokio::net::TcpStream;

    use super::Alpn;
    use crate::config::ServerTlsConfig;

    /// Never made without the `tls` feature.
    #[derive(Clone)]
    pub(crate) enum ServerTls {}

    /// Never made without the `tls` feature.
    pub(crate) type TlsStream = TcpStream;

    /// Never made.
    pub(crate) enum Reload {}

    impl Reload {
        pub(crate) async fn run(
            self: std::sync::Arc<Self>,
            _stop: tokio_util::sync::CancellationToken,
        ) {
            match *self {}
        }
    }

    impl ServerTls {
        pub(crate) async fn handshake(
            &self,
            _stream: TcpStream,
            _peer: std::net::SocketAddr,
            _deadline: tokio::time::Instant,
        ) -> Option<TlsStream> {
            match *self {}
        }

        pub(super) fn reload(&self) -> Option<std::sync::Arc<Reload>> {
            match *self {}
        }
    }

    pub(super) fn load(
        config: &Config,
        _tls: &ServerTlsConfig,
        prefix: &str,
        _cert_file: &str,
        _key_file: &str,
        _alpn: Alpn,
    ) -> Result<ServerTls, ConfigError> {
        Err(config.invalid(
            &format!("{prefix}.cert_file"),
            "serving TLS needs the `tls` feature of mamey-http: `mamey-http = { features = [\"tls\"] }`",
        ))
    }
}
