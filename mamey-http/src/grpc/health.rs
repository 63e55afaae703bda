//! `grpc.health.v1.Health` from the service's readiness.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mamey_core::health::Probe;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::HEALTH_NAME;
use crate::health::SharedHealth;

/// `grpc.health.v1.Health` answered from the service's readiness: `""` and
/// each hosted service are `SERVING` while the service is ready.
#[derive(Clone)]
pub(crate) struct HealthService {
    health: SharedHealth,
    names: Arc<Vec<&'static str>>,
    interval: Duration,
    /// Cancelled when the server stops, ending open watches so that the
    /// graceful shutdown does not wait for them.
    stopping: CancellationToken,
}

impl HealthService {
    pub(crate) fn new(
        health: SharedHealth,
        names: Vec<&'static str>,
        interval: Duration,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            health,
            names: Arc::new(names),
            interval,
            stopping,
        }
    }

    async fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !service.is_empty() && !self.names.contains(&service) && service != HEALTH_NAME {
            return Err(Status::not_found(format!("unknown service `{service}`")));
        }
        let report = self.health.check(Probe::Ready).await;
        Ok(if report.is_serving() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

type WatchStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for HealthService {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service).await?;
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let this = self.clone();
        let stream = futures_util::stream::unfold(None, move |last: Option<i32>| {
            let (this, service) = (this.clone(), service.clone());
            async move {
                loop {
                    if last.is_some() {
                        tokio::select! {
                            () = this.stopping.cancelled() => return None,
                            () = tokio::time::sleep(this.interval) => {}
                        }
                    }
                    let status = this
                        .status(&service)
                        .await
                        .unwrap_or(ServingStatus::ServiceUnknown)
                        as i32;
                    if last != Some(status) {
                        return Some((Ok(HealthCheckResponse { status }), Some(status)));
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
