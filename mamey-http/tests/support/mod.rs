//! Starting a web API on a free port and talking to it over real HTTP.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mamey_core::{RunningService, Service, ServiceBuilder};
use mamey_http::{HttpAddress, Problem, WebApi};

/// A running service and the address its web API listens on.
pub struct Served {
    pub address: SocketAddr,
    pub service: RunningService,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// A builder for service `name` on port 0, no signal handling, with
/// `config` (TOML lines, e.g. `http.request_timeout = "1s"`) as env vars.
pub fn service(name: &str, config: &[(&str, &str)]) -> ServiceBuilder {
    let mut env: Vec<(String, String)> =
        vec![("MAMEY__HTTP__ADDRESS".into(), "127.0.0.1:0".into())];
    for (key, value) in config {
        env.push((
            format!("MAMEY__{}", key.replace('.', "__").to_uppercase()),
            (*value).to_owned(),
        ));
    }
    Service::builder(name)
        .handle_signals(false)
        .config_dir(std::env::temp_dir().join("mamey-http-tests-no-config"))
        .env_vars(env)
}

/// Builds and starts the service with `api` added last.
pub async fn serve(builder: ServiceBuilder, api: WebApi) -> Served {
    let service = builder.plugin(api).build().await.expect("service builds");
    let HttpAddress(address) = service.resources().get::<HttpAddress>().unwrap();
    let service = service.start().await.expect("service starts");
    Served { address, service }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as a problem document, checking the media type.
    pub fn problem(&self) -> Problem {
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "status {} body {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole response.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = client().request(request).await.expect("request sent");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

pub async fn post_json(url: &str, body: &serde_json::Value) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}
