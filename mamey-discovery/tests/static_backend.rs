//! The static backend, the embedded default: fixed endpoints from
//! `discovery.static.services`, and configuration errors that name the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mamey_core::ServiceError;
use mamey_core::discovery::{Endpoint, ServiceResolver};
use mamey_core::health::{Probe, Status};
use mamey_discovery::Discovery;
use mamey_http::{ServiceClient, ServiceClientPlugin};
use support::{service, start, whoami};

#[tokio::test]
async fn names_resolve_to_the_configured_endpoints() {
    let settings = [(
        "discovery.static.services.pricing",
        "[\"http://127.0.0.1:7001/\", \"http://127.0.0.1:7002\"]".to_owned(),
    )];
    let service = service("checkout", &settings)
        .plugin(Discovery::new())
        .build()
        .await
        .unwrap();
    let resolver = service.resources().get::<ServiceResolver>().unwrap();
    assert_eq!(
        resolver.resolve("pricing").await.unwrap(),
        [
            Endpoint::new("http://127.0.0.1:7001"),
            Endpoint::new("http://127.0.0.1:7002")
        ]
    );
    let unknown = resolver.resolve("billing").await.unwrap_err();
    assert_eq!(unknown.code(), "discovery.no_endpoints");
    let report = service.health().check(Probe::Ready).await;
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "discovery")
        .unwrap();
    assert_eq!(check.result.status, Status::Healthy);
}

#[tokio::test]
async fn the_service_client_calls_static_services_by_name() {
    let (pricing, address) = start(service("pricing", &[]).plugin(whoami("pricing-1"))).await;
    let settings = [(
        "discovery.static.services.pricing",
        format!("[\"http://{address}\"]"),
    )];
    let caller = service("checkout", &settings)
        .plugin(Discovery::new())
        .plugin(ServiceClientPlugin::new())
        .build()
        .await
        .unwrap();
    let client = caller.resources().get::<ServiceClient>().unwrap();
    let answer = client.get("pricing", "/whoami").send().await.unwrap();
    assert_eq!(&answer.body[..], b"pricing-1");
    pricing.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_backend_names_the_key_and_the_choices() {
    let settings = [("discovery.backend", "zookeeper".to_owned())];
    let error = service("checkout", &settings)
        .plugin(Discovery::new())
        .build()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            ServiceError::PluginInit {
                plugin: "discovery",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(text.contains("discovery.backend"), "{text}");
    assert!(text.contains("MAMEY__DISCOVERY__BACKEND"), "{text}");
    assert!(text.contains("static"), "{text}");
}

#[tokio::test]
async fn a_misspelt_key_is_an_error_naming_it() {
    let settings = [("discovery.lookup_timout", "1s".to_owned())];
    let error = service("checkout", &settings)
        .plugin(Discovery::new())
        .build()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("lookup_timout"), "{error}");
}
