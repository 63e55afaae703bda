//! [`Instance`]: one running copy of a service, as a registry knows it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use mamey_core::config::AppConfig;
use mamey_core::discovery::Endpoint;
use serde::{Deserialize, Serialize};

use crate::config::InstanceConfig;

/// One running copy of a service: what is registered, and what a lookup
/// finds.
///
/// ```
/// use mamey_discovery::Instance;
///
/// let instance = Instance::new("orders", "orders-1", "10.0.0.7", 8080);
/// assert_eq!(instance.endpoint().url, "http://10.0.0.7:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name.
    pub service: String,
    /// Unique among the service's instances: `{service}-{app.instance_id}`.
    pub id: String,
    /// Host or IP callers reach it at.
    pub address: String,
    /// Port callers reach it at.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata, `version` included.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// An instance over plain HTTP, with no tags or metadata.
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
        port: u16,
    ) -> Self {
        Self {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            port,
            scheme: "http".to_owned(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    /// The base URL callers use: `{scheme}://{address}:{port}`, an IPv6
    /// address in brackets.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        let host = if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        Endpoint::new(format!("{}://{host}:{}", self.scheme, self.port))
    }

    /// This service's instance, from `discovery.instance`, the `app`
    /// section and the address the service is bound to.
    ///
    /// # Errors
    /// A message naming the key to set when there is no port to advertise.
    pub(crate) fn advertised(
        config: &InstanceConfig,
        app: &AppConfig,
        bound: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let port = config.port.or(bound.map(|b| b.port())).ok_or(
            "`discovery.instance.port`: the service has no web API or gRPC server whose port \
             could be advertised; set the port to register",
        )?;
        let address = match (&config.address, bound) {
            (Some(address), _) if !address.is_empty() => address.clone(),
            (_, Some(bound)) if !bound.ip().is_unspecified() => bound.ip().to_string(),
            _ => outward_ip().to_string(),
        };
        let prefix = format!("{}-", app.name);
        let id = if app.instance_id.starts_with(&prefix) {
            app.instance_id.clone()
        } else {
            format!("{prefix}{}", app.instance_id)
        };
        let mut meta = config.meta.clone();
        meta.entry("version".to_owned())
            .or_insert_with(|| app.version.clone());
        Ok(Self {
            service: app.name.clone(),
            id,
            address,
            port,
            scheme: config.scheme.clone(),
            tags: config.tags.clone(),
            meta,
        })
    }
}

/// The IP of the interface that routes outwards (a UDP socket "connected"
/// to a public address sends nothing), else `127.0.0.1`.
fn outward_ip() -> IpAddr {
    let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            socket.local_addr()
        })
        .map(|local| local.ip());
    match routed {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(instance_id: &str) -> AppConfig {
        AppConfig {
            name: "orders".into(),
            instance_id: instance_id.into(),
            version: "1.2.3".into(),
            profile: "dev".into(),
        }
    }

    #[test]
    fn the_bound_address_is_advertised_by_default() {
        let bound: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let instance =
            Instance::advertised(&InstanceConfig::default(), &app("orders-abc"), Some(bound))
                .unwrap();
        assert_eq!(instance.id, "orders-abc");
        assert_eq!(instance.endpoint().url, "http://127.0.0.1:8081");
        assert_eq!(instance.meta["version"], "1.2.3");
    }

    #[test]
    fn configured_values_win_and_ids_get_the_service_prefix() {
        let config = InstanceConfig {
            address: Some("orders.internal".into()),
            port: Some(9000),
            scheme: "https".into(),
            tags: vec!["blue".into()],
            meta: BTreeMap::from([("version".into(), "override".into())]),
        };
        let bound: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let instance = Instance::advertised(&config, &app("7"), Some(bound)).unwrap();
        assert_eq!(instance.id, "orders-7");
        assert_eq!(instance.endpoint().url, "https://orders.internal:9000");
        assert_eq!(instance.meta["version"], "override");
        assert_eq!(instance.tags, ["blue"]);
    }

    #[test]
    fn an_unspecified_bind_advertises_a_concrete_ip() {
        let bound: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let instance =
            Instance::advertised(&InstanceConfig::default(), &app("a"), Some(bound)).unwrap();
        let ip: IpAddr = instance.address.parse().unwrap();
        assert!(!ip.is_unspecified());
    }

    #[test]
    fn no_port_names_the_key_to_set() {
        let error = Instance::advertised(&InstanceConfig::default(), &app("a"), None).unwrap_err();
        assert!(error.contains("discovery.instance.port"), "{error}");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let instance = Instance::new("orders", "orders-1", "::1", 80);
        assert_eq!(instance.endpoint().url, "http://[::1]:80");
    }
}
