//! How outgoing HTTP connects: the connector (plain HTTP, and HTTPS with
//! feature `tls`) shared by the service client and JWKS fetching, and a
//! bounded GET.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// How outgoing calls connect: plain HTTP, and HTTPS with feature `tls`.
#[cfg(feature = "tls")]
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
/// How outgoing calls connect: plain HTTP, and HTTPS with feature `tls`.
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = HttpConnector;

/// The connector for outgoing calls. With feature `tls`, HTTPS is verified
/// against Mozilla's roots (`webpki-roots`) plus the certificates in
/// `ca_file` (PEM), with rustls and its ring provider.
pub(crate) fn connector(
    connect_timeout: Duration,
    ca_file: Option<&str>,
) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        http.enforce_http(false);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("reading `{path}`: {e}"))?;
            for certificate in certificates {
                let certificate = certificate.map_err(|e| format!("`{path}`: {e}"))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("`{path}`: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http))
    }
    #[cfg(not(feature = "tls"))]
    {
        match ca_file {
            Some(_) => Err("`ca_file` needs the `tls` feature of mamey-http".to_owned()),
            None => Ok(http),
        }
    }
}

/// GETs `uri` with `client` and returns a body of at most `limit` bytes.
pub(crate) async fn get_bytes(
    client: &Client<Connector, Empty<Bytes>>,
    uri: &http::Uri,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, String> {
    // One deadline for the headers and the whole body.
    let exchange = async {
        let response = client.get(uri.clone()).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no whole answer within {timeout:?}"))?
}
