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
//! - **Commands** (`post`, `put`, `patch`, `delete`): the JSON body (optional for
//!   `delete`) with the route values bound over its fields; `204 No
//!   Content` by default, `201 Created` with `location` after
//!   [`created`](Operation::created), `202 Accepted` after
//!   [`accepted`](Operation::accepted).
//! - Route values are bound as JSON numbers when they look like numbers,
//!   else as strings (and as strings when the number does not fit the field).

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
        let query: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_query",
                e.to_string(),
            )
            .into_response()
        })?;
        // Route values win over query parameters of the same name.
        let taken: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        pairs.extend(query.into_iter().filter(|(k, _)| !taken.contains(k)));
    }
    let encoded = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let mut query: Q = serde_urlencoded::from_str(&encoded).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "request.invalid_query",
            e.to_string(),
        )
        .into_response()
    })?;
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
                "request.invalid_route_value",
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
    let fields = if body.is_empty() {
        if spec.method != Method::DELETE && values.is_empty() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "request.missing_body",
                "expected a JSON body",
            )
            .into_response());
        }
        Map::new()
    } else {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.content_type",
                "expected a body with `content-type: application/json`",
            )
            .into_response());
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "request.invalid_body",
                    "expected a JSON object",
                )
                .into_response());
            }
            Err(e) => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "request.malformed_json",
                    format!("the body is not valid JSON: {e}"),
                )
                .into_response());
            }
        }
    };
    let mut command: C = bind(fields, &values).map_err(|e| ApiError(e).into_response())?;
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

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
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

/// Deserializes `fields` with the route values set over them: as numbers or
/// booleans when they read as such, and as strings where that does not fit
/// the field.
fn bind<C: DeserializeOwned>(
    mut fields: Map<String, Value>,
    values: &[(String, String)],
) -> Result<C, Error> {
    let mut typed = Vec::new();
    for (name, value) in values {
        let parsed = if let Ok(n) = value.parse::<i64>() {
            Value::from(n)
        } else if let Ok(n) = value.parse::<u64>() {
            Value::from(n)
        } else if let Ok(b) = value.parse::<bool>() {
            Value::from(b)
        } else {
            Value::from(value.clone())
        };
        if !parsed.is_string() {
            typed.push(name.as_str());
        }
        fields.insert(name.clone(), parsed);
    }
    loop {
        match from_fields(fields.clone()) {
            Ok(bound) => return Ok(bound),
            Err((error, path)) => {
                // A route value read as a number that the field wants as a
                // string: give it as the string it arrived as, and retry.
                let Some(position) = typed.iter().position(|name| *name == path) else {
                    return Err(error);
                };
                let name = typed.swap_remove(position);
                if let Some((_, raw)) = values.iter().find(|(n, _)| n == name) {
                    fields.insert(name.to_owned(), Value::from(raw.clone()));
                }
            }
        }
    }
}

/// Deserializes, or says why and at which field path.
fn from_fields<C: DeserializeOwned>(fields: Map<String, Value>) -> Result<C, (Error, String)> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let error = Error::invalid_input(
            "request.invalid_body",
            format!("the body does not fit: {message}"),
        );
        if path == "." {
            (error, path)
        } else {
            (error.with_field(path.clone(), "invalid", message), path)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Rename {
        id: u64,
        code: String,
        name: String,
    }

    #[test]
    fn route_values_bind_as_numbers_or_strings() {
        let mut body = Map::new();
        body.insert("name".into(), "new".into());
        let values = [
            ("id".to_owned(), "7".to_owned()),
            ("code".to_owned(), "42".to_owned()),
        ];
        let bound: Rename = bind(body, &values).unwrap();
        assert_eq!(
            bound,
            Rename {
                id: 7,
                code: "42".into(),
                name: "new".into()
            }
        );
    }

    #[test]
    fn binding_errors_name_the_field() {
        let mut body = Map::new();
        body.insert("id".into(), 1.into());
        body.insert("code".into(), "x".into());
        body.insert("name".into(), 5.into());
        let error = bind::<Rename>(body, &[]).unwrap_err();
        assert_eq!(error.fields()[0].field, "name");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
    }
}
