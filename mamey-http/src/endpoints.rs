//! The endpoint DSL: routes mapped to queries and commands, run through the
//! service's dispatcher (and so its middleware).
//!
//! ```
//! use mamey_core::cqrs::{Command, Query};
//! use mamey_http::{Auth, Endpoints};
//! use serde::Deserialize;
//! use utoipa::ToSchema;
//!
//! #[derive(Deserialize, ToSchema)]
//! struct GetOrder { id: u64 }
//! impl Query for GetOrder { type Output = Option<String>; }
//!
//! #[derive(Deserialize, ToSchema)]
//! struct CreateOrder { id: u64, customer: String }
//! impl Command for CreateOrder {}
//!
//! let endpoints = Endpoints::new()
//!     .get::<GetOrder>("/orders/{id}")
//!     .post::<CreateOrder>("/orders")
//!     .created(|order| format!("/orders/{}", order.id))
//!     .auth(Auth::roles(["clerk"]));
//! ```
//!
//! - **Queries** (`get`): route values and the query string are bound into
//!   the query; the output is the `200` JSON body, and an output that
//!   serializes to `null` (`None`) is `404`.
//! - **Commands** (`post`, `put`, `patch`, `delete`): the JSON body (an
//!   empty one is `{}`) with the route values bound over its fields (a body
//!   field contradicting one is refused); `204 No Content` by default, `201
//!   Created` with `location` after [`created`](Operation::created), `202
//!   Accepted` after [`accepted`](Operation::accepted).
//! - Route values are bound as JSON numbers when they look like numbers,
//!   else as strings (and as strings when the number does not fit the field).
//! - A parameter that does not parse is `400 request.invalid_parameter`, a
//!   body that is not JSON `400 request.invalid_json`, JSON that does not
//!   fit `422 request.invalid_body`, each naming the culprit (see `bind`).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use mamey_core::Error;
use mamey_core::cqrs::{Command, Dispatcher, Query};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::{Auth, Authentication, Policies};
use crate::bind::{BindError, bind_command, bind_parameters, is_json, not_json, parse_json};
use crate::openapi::{Describe, EndpointDoc, Schemas};
use crate::problem::{ApiError, Problem, too_large};

type Before<M> = Arc<dyn Fn(&mut M) -> Result<(), Error> + Send + Sync>;
type After<M> = Arc<dyn Fn(&M, &mut Response) + Send + Sync>;
type Location<M> = Arc<dyn Fn(&M) -> String + Send + Sync>;

/// What a route needs from the web API to run.
#[derive(Clone)]
pub(crate) struct RouteEnv {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) policies: Arc<Policies>,
    pub(crate) body_limit: usize,
}

/// One finished endpoint, type-erased.
pub(crate) trait EndpointDef: Send {
    fn method(&self) -> &Method;
    fn path(&self) -> &str;
    fn auth(&self) -> &Auth;
    fn route(self: Box<Self>, env: RouteEnv) -> MethodRouter;
    fn describe(&self, schemas: &mut Schemas) -> EndpointDoc;
}

/// A set of endpoints; give it to [`WebApi::endpoints`](crate::WebApi::endpoints).
#[derive(Default)]
pub struct Endpoints {
    pub(crate) defs: Vec<Box<dyn EndpointDef>>,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.defs
                    .iter()
                    .map(|d| format!("{} {}", d.method(), d.path())),
            )
            .finish()
    }
}

impl Endpoints {
    /// No endpoints.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `GET path` answers query `Q`: `200` with its output as JSON, `404`
    /// when the output is `null`.
    pub fn get<Q>(self, path: &str) -> Operation<Q>
    where
        Q: Query + DeserializeOwned + ToSchema,
        Q::Output: Serialize + ToSchema,
    {
        Operation::new(self, Method::GET, path, finish::<Q, AsQuery>)
    }

    /// `POST path` sends command `C`.
    pub fn post<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        Operation::new(self, Method::POST, path, finish::<C, AsCommand>)
    }

    /// `PUT path` sends command `C`.
    pub fn put<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        Operation::new(self, Method::PUT, path, finish::<C, AsCommand>)
    }

    /// `PATCH path` sends command `C`.
    pub fn patch<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        Operation::new(self, Method::PATCH, path, finish::<C, AsCommand>)
    }

    /// `DELETE path` sends command `C`; the body is optional.
    pub fn delete<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        Operation::new(self, Method::DELETE, path, finish::<C, AsCommand>)
    }

    /// The endpoints of `other` too.
    #[must_use]
    pub fn merge(mut self, other: impl Into<Endpoints>) -> Self {
        self.defs.extend(other.into().defs);
        self
    }
}

/// The settings of one endpoint, shared by queries and commands.
struct Spec<M> {
    method: Method,
    path: String,
    auth: Auth,
    summary: Option<String>,
    before: Vec<Before<M>>,
    after: Vec<After<M>>,
    clone: Option<fn(&M) -> M>,
    location: Option<Location<M>>,
    status: Option<StatusCode>,
}

/// One operation (a method on a route, mapped to a query or a command) being
/// configured; call another verb to add the next one, or pass it to
/// [`WebApi::endpoints`](crate::WebApi::endpoints).
pub struct Operation<M> {
    endpoints: Endpoints,
    spec: Spec<M>,
    finish: fn(Spec<M>) -> Box<dyn EndpointDef>,
}

impl<M> fmt::Debug for Operation<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("method", &self.spec.method)
            .field("path", &self.spec.path)
            .field("auth", &self.spec.auth)
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> Operation<M> {
    fn new(
        endpoints: Endpoints,
        method: Method,
        path: &str,
        finish: fn(Spec<M>) -> Box<dyn EndpointDef>,
    ) -> Self {
        Self {
            endpoints,
            spec: Spec {
                method,
                path: path.to_owned(),
                auth: Auth::Anonymous,
                summary: None,
                before: Vec::new(),
                after: Vec::new(),
                clone: None,
                location: None,
                status: None,
            },
            finish,
        }
    }

    /// Who may call it. Default: [`Auth::Anonymous`].
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.spec.auth = auth;
        self
    }

    /// A one-line summary for the OpenAPI document.
    #[must_use]
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.spec.summary = Some(summary.into());
        self
    }

    /// Runs `hook` on the bound message before it is dispatched; it may
    /// change the message (e.g. set the caller's id from
    /// [`MessageContext::current`](mamey_core::MessageContext::current)) or
    /// reject it with an error.
    #[must_use]
    pub fn before<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut M) -> Result<(), Error> + Send + Sync + 'static,
    {
        self.spec.before.push(Arc::new(hook));
        self
    }

    fn finish(self) -> Endpoints {
        let mut endpoints = self.endpoints;
        endpoints.defs.push((self.finish)(self.spec));
        endpoints
    }

    /// Adds the next endpoint: `GET path` for query `Q`.
    pub fn get<Q>(self, path: &str) -> Operation<Q>
    where
        Q: Query + DeserializeOwned + ToSchema,
        Q::Output: Serialize + ToSchema,
    {
        self.finish().get(path)
    }

    /// Adds the next endpoint: `POST path` for command `C`.
    pub fn post<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        self.finish().post(path)
    }

    /// Adds the next endpoint: `PUT path` for command `C`.
    pub fn put<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        self.finish().put(path)
    }

    /// Adds the next endpoint: `PATCH path` for command `C`.
    pub fn patch<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        self.finish().patch(path)
    }

    /// Adds the next endpoint: `DELETE path` for command `C`.
    pub fn delete<C>(self, path: &str) -> Operation<C>
    where
        C: Command + DeserializeOwned + ToSchema,
    {
        self.finish().delete(path)
    }
}

impl<M: Clone + Send + 'static> Operation<M> {
    /// Runs `hook` on the response after a successful dispatch, with the
    /// message as dispatched (e.g. to add a header or replace the body).
    #[must_use]
    pub fn after<F>(mut self, hook: F) -> Self
    where
        F: Fn(&M, &mut Response) + Send + Sync + 'static,
    {
        self.spec.clone = Some(M::clone);
        self.spec.after.push(Arc::new(hook));
        self
    }
}

impl<C: Command> Operation<C> {
    /// Answers `201 Created` with `location` set to what `location` makes
    /// of the command (evaluated before dispatch, after the `before` hooks).
    #[must_use]
    pub fn created<F>(mut self, location: F) -> Self
    where
        F: Fn(&C) -> String + Send + Sync + 'static,
    {
        self.spec.location = Some(Arc::new(location));
        self.spec.status = Some(StatusCode::CREATED);
        self
    }

    /// Answers `202 Accepted`: for commands handled asynchronously.
    #[must_use]
    pub fn accepted(mut self) -> Self {
        self.spec.status = Some(StatusCode::ACCEPTED);
        self
    }
}

impl<M: Send + 'static> From<Operation<M>> for Endpoints {
    fn from(operation: Operation<M>) -> Self {
        operation.finish()
    }
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

/// How endpoints of message type `M` answer and are documented: as a query
/// ([`AsQuery`]) or as a command ([`AsCommand`]).
trait Answer<M>: 'static {
    fn answer(
        spec: &Spec<M>,
        env: &RouteEnv,
        request: Request,
    ) -> impl Future<Output = Result<Response, Response>> + Send;

    fn describe(spec: &Spec<M>, schemas: &mut Schemas) -> EndpointDoc;
}

struct AsQuery;

impl<Q> Answer<Q> for AsQuery
where
    Q: Query + DeserializeOwned + ToSchema,
    Q::Output: Serialize + ToSchema,
{
    fn answer(
        spec: &Spec<Q>,
        env: &RouteEnv,
        request: Request,
    ) -> impl Future<Output = Result<Response, Response>> + Send {
        answer_query(spec, env, request)
    }

    fn describe(spec: &Spec<Q>, schemas: &mut Schemas) -> EndpointDoc {
        Describe::query::<Q>(
            &spec.method,
            &spec.path,
            &spec.auth,
            spec.summary.as_deref(),
            schemas,
        )
    }
}

struct AsCommand;

impl<C> Answer<C> for AsCommand
where
    C: Command + DeserializeOwned + ToSchema,
{
    fn answer(
        spec: &Spec<C>,
        env: &RouteEnv,
        request: Request,
    ) -> impl Future<Output = Result<Response, Response>> + Send {
        answer_command(spec, env, request)
    }

    fn describe(spec: &Spec<C>, schemas: &mut Schemas) -> EndpointDoc {
        Describe::command::<C>(
            &spec.method,
            &spec.path,
            &spec.auth,
            spec.summary.as_deref(),
            spec.status.unwrap_or(StatusCode::NO_CONTENT),
            schemas,
        )
    }
}

/// A finished endpoint: its settings and how it answers.
struct Defined<M, A>(Arc<Spec<M>>, PhantomData<fn() -> A>);

fn finish<M, A>(spec: Spec<M>) -> Box<dyn EndpointDef>
where
    M: Send + 'static,
    A: Answer<M>,
{
    Box::new(Defined::<M, A>(Arc::new(spec), PhantomData))
}

impl<M, A> EndpointDef for Defined<M, A>
where
    M: Send + 'static,
    A: Answer<M>,
{
    fn method(&self) -> &Method {
        &self.0.method
    }
    fn path(&self) -> &str {
        &self.0.path
    }
    fn auth(&self) -> &Auth {
        &self.0.auth
    }

    fn route(self: Box<Self>, env: RouteEnv) -> MethodRouter {
        let spec = self.0;
        let filter = method_filter(&spec.method);
        on(filter, move |request: Request| {
            let (spec, env) = (Arc::clone(&spec), env.clone());
            async move {
                match A::answer(&spec, &env, request).await {
                    Ok(response) | Err(response) => response,
                }
            }
        })
    }

    fn describe(&self, schemas: &mut Schemas) -> EndpointDoc {
        A::describe(&self.0, schemas)
    }
}

async fn answer_query<Q>(
    spec: &Spec<Q>,
    env: &RouteEnv,
    request: Request,
) -> Result<Response, Response>
where
    Q: Query + DeserializeOwned,
    Q::Output: Serialize,
{
    let (mut parts, _body) = request.into_parts();
    env.policies
        .authorize(&spec.auth, parts.extensions.get::<Authentication>())
        .map_err(IntoResponse::into_response)?;
    let mut pairs = route_values(&mut parts).await?;
    if let Some(query) = parts.uri.query() {
        // Route values win over query parameters of the same name.
        let query = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| !pairs.iter().any(|(taken, _)| taken == k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        pairs.extend(query);
    }
    let mut query: Q = bind_parameters(&pairs).map_err(|e| e.problem().into_response())?;
    for hook in &spec.before {
        hook(&mut query).map_err(|e| ApiError(e).into_response())?;
    }
    let kept = spec.clone.map(|clone| clone(&query));
    let output = env
        .dispatcher
        .query(query)
        .await
        .map_err(|e| ApiError(e).into_response())?;
    let body = serde_json::to_vec(&output).map_err(|e| {
        ApiError(Error::internal(format!("serializing the reply: {e}"))).into_response()
    })?;
    if body == b"null" {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            // The query's type name is the service's business, not the
            // caller's.
            "nothing was found at this address",
        )
        .into_response());
    }
    let mut response = json_response(StatusCode::OK, body);
    if let Some(query) = kept {
        for hook in &spec.after {
            hook(&query, &mut response);
        }
    }
    Ok(response)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The route values, percent-decoded, in template order.
async fn route_values(parts: &mut http::request::Parts) -> Result<Vec<(String, String)>, Response> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_parameter",
                e.body_text(),
            )
            .into_response()
        })?;
    Ok(params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

async fn answer_command<C>(
    spec: &Spec<C>,
    env: &RouteEnv,
    request: Request,
) -> Result<Response, Response>
where
    C: Command + DeserializeOwned,
{
    let (mut parts, body) = request.into_parts();
    env.policies
        .authorize(&spec.auth, parts.extensions.get::<Authentication>())
        .map_err(IntoResponse::into_response)?;
    let values = route_values(&mut parts).await?;
    let body = read_body(body, env.body_limit).await?;
    // No body is no fields: the message's required fields are then named
    // as missing, the same answer as for `{}`.
    let fields = if body.is_empty() {
        Map::new()
    } else {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(not_json().into_response());
        }
        match parse_json::<Value>(&body).map_err(|e| e.problem().into_response())? {
            Value::Object(fields) => fields,
            _ => {
                return Err(BindError::Body {
                    field: None,
                    code: "type",
                    message: "expected a JSON object".to_owned(),
                }
                .problem()
                .into_response());
            }
        }
    };
    let mut command: C = bind_command(fields, &values).map_err(|e| e.problem().into_response())?;
    for hook in &spec.before {
        hook(&mut command).map_err(|e| ApiError(e).into_response())?;
    }
    let location = spec.location.as_ref().map(|l| l(&command));
    let kept = spec.clone.map(|clone| clone(&command));
    env.dispatcher
        .send(command)
        .await
        .map_err(|e| ApiError(e).into_response())?;
    let mut response = spec
        .status
        .unwrap_or(StatusCode::NO_CONTENT)
        .into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(command) = kept {
        for hook in &spec.after {
            hook(&command, &mut response);
        }
    }
    Ok(response)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(<dyn std::error::Error>::is::<http_body_util::LengthLimitError>);
        if too_big {
            too_large().into_response()
        } else {
            Problem::new(StatusCode::BAD_REQUEST, "request.body", e.to_string()).into_response()
        }
    })
}
