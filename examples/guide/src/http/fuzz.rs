//! The OpenAPI fuzzer, in a test (feature `testing`, a dev-dependency).

use mamey_http::testing::{FuzzReport, OpenApiFuzz};

// ANCHOR: fuzz
/// Fuzzes the service at `address` as a clerk and as a manager.
pub async fn fuzz(
    address: std::net::SocketAddr,
    clerk_token: &str,
    manager_token: &str,
) -> FuzzReport {
    let report = OpenApiFuzz::new(format!("http://{address}"))
        .seed(42)
        .token(clerk_token)
        .token(manager_token)
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}")); // names each finding and the request
    report
}
// ANCHOR_END: fuzz
