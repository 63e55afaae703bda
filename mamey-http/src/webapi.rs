//! The [`WebApi`] plug-in.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use mamey_core::config::ConfigError;
use mamey_core::cqrs::Dispatcher;
use mamey_core::health::Probe;
use mamey_core::{BoxError, Identity, InitContext, Plugin, StartContext};
use mamey_observability::metrics::HttpServerMetrics;
use mamey_observability::{LogLevel, Prometheus};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Auth, Authentication, Authenticator, Policies};
use crate::config::{CorsConfig, HttpConfig};
use crate::endpoints::{Endpoints, RouteEnv};
use crate::extractors::Json;
use crate::health::SharedHealth;
use crate::limits::{HttpLimits, Limits, LimitsLayer};
use crate::openapi::{DOCS_PAGE, document};
use crate::pipeline::{Pipeline, PipelineLayer};
use crate::problem::Problem;
use crate::tls::Alpn;

/// A resource of the service (a client, a pool), as an extractor for axum
/// handlers: any plug-in's resource, whatever the order of the plug-ins.
/// A missing resource is a bug of the service: `500`, with the type logged.
///
/// ```
/// use mamey_http::{ApiError, Resource, ServiceClient};
///
/// async fn price(Resource(client): Resource<ServiceClient>) -> Result<bytes::Bytes, ApiError> {
///     Ok(client.get("pricing", "/prices/42").send().await?.body)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Resource<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Resource<T>
where
    T: Clone + Send + Sync + 'static,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Problem> {
        let found = parts
            .extensions
            .get::<Arc<mamey_core::Resources>>()
            .map(|resources| resources.get::<T>());
        match found {
            Some(Ok(value)) => Ok(Self(value)),
            Some(Err(missing)) => {
                tracing::error!(error = %missing, "a handler asked for a missing resource");
                Err(internal())
            }
            None => {
                tracing::error!("resources are available once the web API has started");
                Err(internal())
            }
        }
    }
}

fn internal() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred",
    )
}

/// Request headers never logged, whatever `http.sensitive_headers` adds.
const ALWAYS_SENSITIVE: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
];

pub use mamey_core::discovery::HttpAddress;

/// The web API plug-in: serves your axum routes and the DSL
/// [`Endpoints`] with mamey's request pipeline and operational endpoints.
///
/// ```no_run
/// use axum::routing::get;
/// use mamey_core::Service;
/// use mamey_http::WebApi;
///
/// # async fn run() -> Result<(), mamey_core::ServiceError> {
/// Service::builder("greeter")
///     .plugin(WebApi::new().router(axum::Router::new().route("/hello", get(|| async { "hello" }))))
///     .build()
///     .await?
///     .run()
///     .await
/// # }
/// ```
///
/// Every request goes through, outermost first: CORS, the body-size check,
/// trace and correlation context extraction, bearer-token authentication,
/// a `request` server span, the timeout (`http.request_timeout`), panic
/// recovery, compression, and overload protection (`http.limits`: the rate
/// limit per caller, load shedding, concurrency limits). Errors of every
/// kind are problem+json.
///
/// Mamey's own routes: `/health/live`, `/health/ready`, `/health/startup`,
/// `/metrics` (with the observability plug-in added first),
/// `/openapi.json`, `/docs`, and `/log-level` (for `http.endpoints.admin_role`).
pub struct WebApi {
    router: Router,
    endpoints: Endpoints,
    policies: Policies,
    listener: Option<TcpListener>,
    app: Option<Router>,
    pipeline: Option<Arc<Pipeline>>,
    settings: crate::serve::Settings,
    tls: Option<crate::tls::ServerTls>,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApi")
            .field("endpoints", &self.endpoints)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Default for WebApi {
    fn default() -> Self {
        Self::new()
    }
}

impl WebApi {
    /// No routes yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            endpoints: Endpoints::new(),
            policies: Policies::default(),
            listener: None,
            app: None,
            pipeline: None,
            settings: crate::serve::Settings::from_config(&HttpConfig::default()),
            tls: None,
        }
    }

    /// Serves `router`'s routes too (merged with the others).
    #[must_use]
    pub fn router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Serves the DSL `endpoints` too.
    #[must_use]
    pub fn endpoints(mut self, endpoints: impl Into<Endpoints>) -> Self {
        self.endpoints = std::mem::take(&mut self.endpoints).merge(endpoints);
        self
    }

    /// Registers a named policy for [`Auth::Policy`]: allowed when `rule`
    /// returns `true` for the caller's identity.
    #[must_use]
    pub fn policy<F>(mut self, name: impl Into<String>, rule: F) -> Self
    where
        F: Fn(&Identity) -> bool + Send + Sync + 'static,
    {
        self.policies.insert(name.into(), Arc::new(rule));
        self
    }
}

impl Plugin for WebApi {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config: HttpConfig = ctx.section()?;
        for def in &self.endpoints.defs {
            if let Auth::Policy(name) = def.auth()
                && !self.policies.contains(name)
            {
                return Err(format!(
                    "endpoint {} {} requires policy `{name}`, which is not registered (WebApi::policy)",
                    def.method(),
                    def.path()
                )
                .into());
            }
        }
        let authenticator = Authenticator::from_config(&config.jwt, "http.jwt")?.map(Arc::new);
        let tls = crate::tls::server_tls(ctx.config(), &config.tls, "http.tls", Alpn::Http)?;
        let cors = cors_layer(&config.cors)?;
        let limits = Limits::from_config(
            &config.limits,
            "http",
            Some(config.concurrency_limit),
            ctx.config(),
        )?;
        let sensitive_headers = ALWAYS_SENSITIVE
            .iter()
            .map(|name| (*name).to_owned())
            .chain(config.sensitive_headers.iter().cloned())
            .map(|name| {
                HeaderName::try_from(name.as_str()).map_err(|_| {
                    ConfigError::new(
                        "http.sensitive_headers",
                        format!("expected header names, found `{name}`"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listener = TcpListener::bind(config.address.as_str())
            .await
            .map_err(|e| {
                ConfigError::new(
                    "http.address",
                    format!(
                        "cannot listen on `{}` (expected `host:port`, free and allowed): {e}",
                        config.address
                    ),
                )
            })?;
        let bound = listener.local_addr()?;
        ctx.provide(HttpAddress(bound))?;

        let env = RouteEnv {
            dispatcher: ctx.resource::<Dispatcher>()?,
            policies: Arc::new(std::mem::take(&mut self.policies)),
            body_limit: config.body_limit,
        };
        let operational = Operational {
            health: SharedHealth::new(ctx.health().clone(), config.endpoints.health_reuse),
            prometheus: ctx.resource::<Prometheus>().ok(),
            log_level: ctx.resource::<LogLevel>().ok(),
            policies: Arc::clone(&env.policies),
            admin: Auth::roles([config.endpoints.admin_role.clone()]),
        };

        let mut schemas = Vec::new();
        let mut docs = Vec::new();
        let mut app = std::mem::take(&mut self.router);
        for def in std::mem::take(&mut self.endpoints.defs) {
            docs.push(def.describe(&mut schemas));
            let path = def.path().to_owned();
            app = app.route(&path, def.route(env.clone()));
        }
        if config.endpoints.openapi {
            let app_config = ctx.app();
            let doc = document(&app_config.name, &app_config.version, docs, schemas);
            let doc = Arc::new(serde_json::to_vec_pretty(&doc)?);
            app = app
                .route(
                    "/openapi.json",
                    get(move || {
                        let doc = Arc::clone(&doc);
                        async move {
                            (
                                [(header::CONTENT_TYPE, "application/json")],
                                doc.as_ref().clone(),
                            )
                        }
                    }),
                )
                .route("/docs", get(|| async { axum::response::Html(DOCS_PAGE) }));
        }
        app = operational.routes(app, &config);
        app = app
            .fallback(|| async {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "request.no_route",
                    "no route matches the path",
                )
            })
            .method_not_allowed_fallback(|| async {
                Problem::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "request.method_not_allowed",
                    "the route does not accept this method",
                )
            });
        let pipeline = Arc::new(Pipeline {
            // `http.concurrency_limit` is enforced by `http.limits`, which
            // exempts the health and metrics endpoints.
            timeout: config.request_timeout,
            body_limit: config.body_limit,
            authenticator,
            policies: Arc::clone(&env.policies),
            sensitive_headers,
            metrics: HttpServerMetrics::new(),
            compression: config.compression,
            resources: OnceLock::new(),
        });
        // One `layer` call: each call boxes the stack again, and axum clones
        // a route's whole box chain per request.
        app = app.layer(
            tower::ServiceBuilder::new()
                // CORS outermost, so that answers the pipeline makes itself
                // (shed, too large, timed out) reach browsers too.
                .option_layer(cors)
                .layer(PipelineLayer(Arc::clone(&pipeline)))
                // Inside the pipeline: a valid token's subject is known (the
                // rate limit's caller), and refusals get the request's span,
                // id and metrics.
                .layer(LimitsLayer::new(Arc::new(limits), HttpLimits))
                .layer(DefaultBodyLimit::max(config.body_limit)),
        );
        self.pipeline = Some(pipeline);
        self.settings = crate::serve::Settings::from_config(&config);
        self.app = Some(app);
        self.listener = Some(listener);
        tracing::info!(address = %bound, tls = tls.is_some(), "web API bound");
        self.tls = tls;
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let (Some(listener), Some(app)) = (self.listener.take(), self.app.take()) else {
            return Err("the web API started before it was initialised".into());
        };
        // Every plug-in's resources, for the `Resource` extractor.
        if let Some(pipeline) = &self.pipeline {
            let _ = pipeline.resources.set(Arc::clone(ctx.resources()));
        }
        let (shutdown, settings, tls) = (ctx.shutdown_token(), self.settings, self.tls.take());
        crate::tls::watch_certificate(ctx, tls.as_ref());
        ctx.spawn("serve", async move {
            // Stops accepting when the plug-in stops, then drains the
            // requests in flight for up to `http.drain_timeout` and cuts
            // the connections still open (the service bounds the whole
            // stop by `shutdown.timeout`).
            crate::serve::serve(listener, app, settings, tls, shutdown).await;
            Ok(())
        });
        Ok(())
    }
}

fn cors_layer(config: &CorsConfig) -> Result<Option<CorsLayer>, ConfigError> {
    if config.allowed_origins.is_empty() {
        return Ok(None);
    }
    let any = config.allowed_origins.iter().any(|o| o == "*");
    if any && config.allow_credentials {
        return Err(ConfigError::new(
            "http.cors.allow_credentials",
            "credentials cannot be allowed for every origin (`*`); list the origins",
        ));
    }
    let origin = if any {
        AllowOrigin::any()
    } else {
        let origins = config
            .allowed_origins
            .iter()
            .map(|o| {
                HeaderValue::try_from(o.as_str()).map_err(|_| {
                    ConfigError::new(
                        "http.cors.allowed_origins",
                        format!("expected origins such as `https://app.example.com`, found `{o}`"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(origins)
    };
    let methods = if config.allowed_methods.is_empty() {
        vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
    } else {
        config
            .allowed_methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::new(
                        "http.cors.allowed_methods",
                        format!("expected HTTP methods, found `{m}`"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let headers = if config.allowed_headers.is_empty() {
        [
            "authorization",
            "content-type",
            "x-request-id",
            "x-correlation-id",
            "traceparent",
        ]
        .map(HeaderName::from_static)
        .to_vec()
    } else {
        config
            .allowed_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str()).map_err(|_| {
                    ConfigError::new(
                        "http.cors.allowed_headers",
                        format!("expected header names, found `{h}`"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .allow_credentials(config.allow_credentials)
        .expose_headers([HeaderName::from_static("x-request-id"), header::LOCATION]);
    if config.max_age_secs > 0 {
        layer = layer.max_age(Duration::from_secs(config.max_age_secs));
    }
    Ok(Some(layer))
}

/// Health, metrics and log-level routes.
struct Operational {
    health: SharedHealth,
    prometheus: Option<Prometheus>,
    log_level: Option<LogLevel>,
    policies: Arc<Policies>,
    admin: Auth,
}

impl Operational {
    fn routes(self, mut app: Router, config: &HttpConfig) -> Router {
        if config.endpoints.health {
            for (path, probe) in [
                ("/health/live", Probe::Live),
                ("/health/ready", Probe::Ready),
                ("/health/startup", Probe::Startup),
            ] {
                let health = self.health.clone();
                app = app.route(
                    path,
                    get(move || {
                        let health = health.clone();
                        async move {
                            let report = health.check(probe).await;
                            let status = if report.is_serving() {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            };
                            let mut response = (status, axum::Json(report)).into_response();
                            response.headers_mut().insert(
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("no-store"),
                            );
                            response
                        }
                    }),
                );
            }
        }
        if config.endpoints.metrics
            && let Some(prometheus) = self.prometheus
        {
            app = app.route(
                "/metrics",
                get(move || {
                    let prometheus = prometheus.clone();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                mamey_observability::PROMETHEUS_CONTENT_TYPE,
                            )],
                            prometheus.render(),
                        )
                    }
                }),
            );
        }
        if config.endpoints.log_level
            && let Some(level) = self.log_level
        {
            let (policies, admin) = (self.policies, Arc::new(self.admin));
            app = app.route(
                "/log-level",
                get({
                    let (policies, admin, level) =
                        (Arc::clone(&policies), Arc::clone(&admin), level.clone());
                    move |request: Request| async move {
                        policies
                            .authorize(&admin, request.extensions().get::<Authentication>())
                            .map_err(IntoResponse::into_response)?;
                        Ok::<_, Response>(axum::Json(
                            serde_json::json!({ "filter": level.current() }),
                        ))
                    }
                })
                .put(move |request: Request| async move {
                    policies
                        .authorize(&admin, request.extensions().get::<Authentication>())
                        .map_err(IntoResponse::into_response)?;
                    let Json(change) = Json::<LogLevelChange>::from_request(request)
                        .await
                        .map_err(IntoResponse::into_response)?;
                    level.set(&change.filter).map_err(|e| {
                        Problem::new(StatusCode::BAD_REQUEST, "log_level.invalid", e.to_string())
                            .into_response()
                    })?;
                    tracing::warn!(filter = %change.filter, "log filter changed");
                    Ok::<_, Response>(axum::Json(serde_json::json!({ "filter": level.current() })))
                }),
            );
        }
        app
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelChange {
    filter: String,
}

impl Json<LogLevelChange> {
    async fn from_request(request: Request) -> Result<Self, Problem> {
        <Self as axum::extract::FromRequest<()>>::from_request(request, &()).await
    }
}
