//! Testing a running service against its own OpenAPI document (feature
//! `testing`, for dev-dependencies).
//!
//! [`OpenApiFuzz`] reads `/openapi.json`, walks every operation, and sends
//! requests made from the document: ones that fit it (values inside every
//! documented limit, with each of the given tokens) and ones that do not
//! (a required field left out, a field of the wrong type, a value just past
//! a limit, an extra field, a path or query parameter that does not parse,
//! a body that is not JSON or not labelled JSON, a compressed body, no
//! token, a forged token). Every answer is checked against the document:
//!
//! - no `5xx`, and no request left unanswered;
//! - the status is one the operation lists;
//! - an error (`4xx`) is `application/problem+json` with its `status`;
//! - a request that fits the document is not refused as bad input (`400`,
//!   `408`, `413`, `415`, `422`): the document promised it would be
//!   accepted;
//! - a request that breaks the document is not answered `2xx`: the document
//!   promised a limit the service does not keep.
//!
//! The values come from a seeded generator ([`fastrand`]), so a run is the
//! same every time and a failure names the seed to replay it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mamey_http::testing::OpenApiFuzz;
//!
//! let report = OpenApiFuzz::new("http://127.0.0.1:8080")
//!     .seed(7)
//!     .rounds(40)
//!     .token("eyJ…")
//!     .run()
//!     .await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

use crate::problem::PROBLEM_JSON;

/// What a request was made to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// Fits the document in every way.
    Valid,
    /// Fits the document, with one optional field it does not name.
    ExtraField,
    /// A required body field left out.
    MissingField,
    /// A body field of another type.
    WrongType,
    /// A body value just past a documented limit.
    OutOfRange,
    /// A path parameter that does not parse as its type, or breaks a limit.
    BadPathParameter,
    /// A query parameter that does not parse as its type, or breaks a limit.
    BadQueryParameter,
    /// A JSON body sent as `text/plain`.
    WrongContentType,
    /// A body that is not JSON.
    MalformedJson,
    /// A body with `content-encoding: gzip`.
    ContentEncoding,
    /// No bearer token where the operation needs one.
    NoToken,
    /// A bearer token that is not a valid JWT.
    BadToken,
}

impl Variant {
    fn breaks_the_document(self) -> bool {
        !matches!(self, Self::Valid | Self::ExtraField)
    }
}

/// One answer that does not match the document.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `METHOD /template` of the operation.
    pub operation: String,
    /// What the request tested.
    pub variant: Variant,
    /// The request: method, URI, headers of note and body.
    pub request: String,
    /// The status answered (0 when there was no answer).
    pub status: u16,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}): {} — got {}: {}",
            self.operation, self.variant, self.request, self.status, self.problem
        )
    }
}

/// What a run sent and what came back.
#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    /// The seed the run used.
    pub seed: u64,
    /// Requests sent.
    pub requests: usize,
    /// Per operation, how often each status came back.
    pub statuses: BTreeMap<String, BTreeMap<u16, usize>>,
    /// The answers that do not match the document.
    pub findings: Vec<Finding>,
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} requests (seed {})", self.requests, self.seed)?;
        for (operation, statuses) in &self.statuses {
            let counts: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            writeln!(f, "  {operation}: {}", counts.join(" "))?;
        }
        // The first few tell the story; a broken document repeats itself.
        for finding in self.findings.iter().take(25) {
            writeln!(f, "  FINDING {finding}")?;
        }
        if self.findings.len() > 25 {
            writeln!(f, "  … and {} more", self.findings.len() - 25)?;
        }
        Ok(())
    }
}

/// Why a run failed: answers that do not match the document, or a document
/// that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// `/openapi.json` could not be fetched or is not a document.
    #[error("reading the OpenAPI document: {0}")]
    Document(String),
    /// Some answers did not match the document.
    #[error("{} answer(s) do not match the OpenAPI document:\n{report}", report.findings.len())]
    Mismatch {
        /// The whole run, findings included.
        report: FuzzReport,
    },
}

/// A seeded fuzzer of a running service's `/openapi.json`; see the
/// [module](self) documentation.
#[derive(Debug, Clone)]
pub struct OpenApiFuzz {
    base: String,
    document: String,
    seed: u64,
    rounds: usize,
    tokens: Vec<String>,
    timeout: Duration,
}

impl OpenApiFuzz {
    /// A fuzzer for the service at `base_url` (`http://127.0.0.1:8080`):
    /// seed `1`, 40 requests per operation, no tokens, 5 s per request.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_owned(),
            document: "/openapi.json".to_owned(),
            seed: 1,
            rounds: 40,
            tokens: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The seed of the generator; the same seed sends the same requests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Requests per operation.
    #[must_use]
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self
    }

    /// A valid bearer token to send to operations that need one; give one
    /// per role to reach past `403`s. Each request takes one at random.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// The path of the document. Default: `/openapi.json`.
    #[must_use]
    pub fn document(mut self, path: impl Into<String>) -> Self {
        self.document = path.into();
        self
    }

    /// Longest wait for one answer; a request left unanswered is a finding.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fetches the document and fuzzes every operation in it.
    ///
    /// # Errors
    /// [`FuzzError::Document`] when the document cannot be read;
    /// [`FuzzError::Mismatch`] with the report when an answer does not match
    /// it.
    pub async fn run(&self) -> Result<FuzzReport, FuzzError> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let url = format!("{}{}", self.base, self.document);
        let (status, _, body) = send(&client, self.timeout, plain(Method::GET, &url))
            .await
            .map_err(FuzzError::Document)?;
        if status != 200 {
            return Err(FuzzError::Document(format!("GET {url} answered {status}")));
        }
        let document: Value = serde_json::from_slice(&body)
            .map_err(|e| FuzzError::Document(format!("GET {url}: not JSON: {e}")))?;
        let Some(paths) = document["paths"].as_object() else {
            return Err(FuzzError::Document(format!("GET {url}: no `paths`")));
        };
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut report = FuzzReport {
            seed: self.seed,
            ..FuzzReport::default()
        };
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let op = Operation {
                    base: &self.base,
                    method,
                    template,
                    operation,
                    document: &document,
                };
                for round in 0..self.rounds {
                    let variant = op.pick_variant(&mut rng, round);
                    let token = self.pick_token(&mut rng);
                    let Some(request) = op.request(&mut rng, variant, token) else {
                        continue;
                    };
                    self.check(&client, &op, variant, request, &mut report)
                        .await;
                }
            }
        }
        if report.findings.is_empty() {
            Ok(report)
        } else {
            Err(FuzzError::Mismatch { report })
        }
    }

    fn pick_token<'a>(&'a self, rng: &mut fastrand::Rng) -> Option<&'a str> {
        if self.tokens.is_empty() {
            return None;
        }
        Some(self.tokens[rng.usize(..self.tokens.len())].as_str())
    }

    async fn check(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        op: &Operation<'_>,
        variant: Variant,
        planned: Planned,
        report: &mut FuzzReport,
    ) {
        let name = format!("{} {}", op.method, op.template);
        let described = planned.describe();
        report.requests += 1;
        let finding = |status: u16, problem: String| Finding {
            operation: name.clone(),
            variant,
            request: described.clone(),
            status,
            problem,
        };
        let (status, content_type, body) = match send(client, self.timeout, planned.request).await {
            Ok(answer) => answer,
            Err(e) => {
                report.findings.push(finding(0, e));
                return;
            }
        };
        *report
            .statuses
            .entry(name.clone())
            .or_default()
            .entry(status)
            .or_default() += 1;
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(300).collect();
        let mut problems = Vec::new();
        if status >= 500 {
            problems.push(format!("a server error: {text}"));
        }
        if !op.lists(status) {
            problems.push(format!(
                "status {status} is not listed for the operation: {text}"
            ));
        }
        if status >= 400 {
            let essence = content_type.split(';').next().unwrap_or("").trim();
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            let fits = parsed.as_ref().is_some_and(|p| {
                p["status"].as_u64() == Some(u64::from(status))
                    && p["code"].is_string()
                    && p["type"].is_string()
                    && p["title"].is_string()
                    && p["detail"].is_string()
            });
            if essence != PROBLEM_JSON || !fits {
                problems.push(format!(
                    "an error that is not a problem document (content-type `{content_type}`): {text}"
                ));
            }
        }
        let authorized = !(op.secured() && matches!(variant, Variant::NoToken | Variant::BadToken));
        if !variant.breaks_the_document()
            && matches!(status, 400 | 408 | 413 | 415 | 422)
            && !(planned.tokenless && op.secured())
        {
            problems.push(format!(
                "a request that fits the document was refused: {text}"
            ));
        }
        if variant.breaks_the_document() && (200..300).contains(&status) {
            problems.push("a request that breaks the document was accepted".to_owned());
        }
        if op.secured() && !authorized && status != 401 {
            problems.push(format!("expected 401 without a valid token: {text}"));
        }
        for problem in problems {
            report.findings.push(finding(status, problem));
        }
    }
}

/// A request to send, and how to describe it in a finding.
struct Planned {
    request: Request<Full<Bytes>>,
    body: Option<String>,
    headers: Vec<(String, String)>,
    tokenless: bool,
}

impl Planned {
    fn describe(&self) -> String {
        let mut text = format!("{} {}", self.request.method(), self.request.uri());
        for (name, value) in &self.headers {
            text.push_str(&format!(" [{name}: {value}]"));
        }
        if let Some(body) = &self.body {
            let body: String = body.chars().take(300).collect();
            text.push(' ');
            text.push_str(&body);
        }
        text
    }
}

fn plain(method: Method, url: &str) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = method;
    if let Ok(uri) = url.parse() {
        *request.uri_mut() = uri;
    }
    request
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    request: Request<Full<Bytes>>,
) -> Result<(u16, String, Bytes), String> {
    let answer = tokio::time::timeout(timeout, async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the body broke off: {e}"))?
            .to_bytes();
        Ok((status, content_type, body))
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// One operation of the document.
struct Operation<'a> {
    base: &'a str,
    method: Method,
    template: &'a str,
    operation: &'a Value,
    document: &'a Value,
}

/// A parameter of an operation.
struct Parameter<'a> {
    name: &'a str,
    in_path: bool,
    required: bool,
    schema: &'a Value,
}

impl<'a> Operation<'a> {
    fn secured(&self) -> bool {
        self.operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    }

    fn lists(&self, status: u16) -> bool {
        let Some(responses) = self.operation["responses"].as_object() else {
            return false;
        };
        let range = format!("{}XX", status / 100);
        responses.contains_key(&status.to_string())
            || responses.contains_key(&range)
            || responses.contains_key("default")
    }

    fn parameters(&self) -> Vec<Parameter<'a>> {
        let Some(parameters) = self.operation["parameters"].as_array() else {
            return Vec::new();
        };
        parameters
            .iter()
            .filter_map(|p| {
                let p = resolve(self.document, p);
                Some(Parameter {
                    name: p["name"].as_str()?,
                    in_path: p["in"] == "path",
                    required: p["required"].as_bool().unwrap_or(false) || p["in"] == "path",
                    schema: &p["schema"],
                })
            })
            .filter(|p| !p.name.is_empty())
            .collect()
    }

    fn body_schema(&self) -> Option<&'a Value> {
        let schema = &self.operation["requestBody"]["content"]["application/json"]["schema"];
        (!schema.is_null()).then(|| resolve(self.document, schema))
    }

    fn pick_variant(&self, rng: &mut fastrand::Rng, round: usize) -> Variant {
        // A third of the requests fit the document; the rest break it, one
        // way at a time.
        if round.is_multiple_of(3) {
            return Variant::Valid;
        }
        let body = self.body_schema().is_some();
        let parameters = self.parameters();
        let mut choices = vec![Variant::ContentEncoding];
        if body {
            choices.extend([
                Variant::ExtraField,
                Variant::MissingField,
                Variant::WrongType,
                Variant::OutOfRange,
                Variant::WrongContentType,
                Variant::MalformedJson,
            ]);
        }
        if parameters.iter().any(|p| p.in_path) {
            choices.push(Variant::BadPathParameter);
        }
        if parameters.iter().any(|p| !p.in_path) {
            choices.push(Variant::BadQueryParameter);
        }
        if self.secured() {
            choices.extend([Variant::NoToken, Variant::BadToken]);
        }
        choices[rng.usize(..choices.len())]
    }

    /// The request for `variant`, or `None` when the operation has nothing
    /// the variant could break (a body field of any type, say).
    fn request(
        &self,
        rng: &mut fastrand::Rng,
        variant: Variant,
        token: Option<&str>,
    ) -> Option<Planned> {
        let document = self.document;
        let parameters = self.parameters();
        let mut segments = Vec::new();
        let mut query: Vec<(String, String)> = Vec::new();
        let bad_path = (variant == Variant::BadPathParameter).then(|| {
            let path: Vec<&Parameter<'_>> = parameters.iter().filter(|p| p.in_path).collect();
            path[rng.usize(..path.len())].name
        });
        let bad_query = (variant == Variant::BadQueryParameter).then(|| {
            let query: Vec<&Parameter<'_>> = parameters.iter().filter(|p| !p.in_path).collect();
            query[rng.usize(..query.len())].name
        });
        let mut values = BTreeMap::new();
        for parameter in &parameters {
            let schema = resolve(document, parameter.schema);
            let value = if Some(parameter.name) == bad_path || Some(parameter.name) == bad_query {
                Some(invalid_text(rng, document, schema)?)
            } else if parameter.required || rng.bool() {
                Some(text(&valid(rng, document, schema, 0)))
            } else {
                None
            };
            if let Some(value) = value {
                if parameter.in_path {
                    values.insert(parameter.name, value);
                } else {
                    query.push((parameter.name.to_owned(), value));
                }
            }
        }
        for segment in self.template.split('/').skip(1) {
            let name = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .map(|s| s.trim_start_matches('*'));
            match name {
                Some(name) => segments.push(values.get(name).cloned().unwrap_or_default()),
                None => segments.push(segment.to_owned()),
            }
        }
        let mut uri = crate::url_path(segments.iter().map(String::as_str));
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&query)
                    .finish(),
            );
        }

        let schema = self.body_schema();
        let body: Option<String> = match (variant, schema) {
            (Variant::MalformedJson, Some(_)) => {
                let broken = ["{", "{\"a\":", "[1,", "{}}", "nul", "\"open"];
                Some(broken[rng.usize(..broken.len())].to_owned())
            }
            (_, Some(schema)) => {
                let mut value = valid(rng, document, schema, 0);
                match variant {
                    Variant::ExtraField => {
                        if let Some(object) = value.as_object_mut() {
                            object.insert("zz_not_documented".to_owned(), json!(1));
                        }
                    }
                    Variant::MissingField => {
                        let required = required_names(schema);
                        if required.is_empty() {
                            return None;
                        }
                        let name = &required[rng.usize(..required.len())];
                        value.as_object_mut()?.remove(name);
                    }
                    Variant::WrongType | Variant::OutOfRange => {
                        let object = value.as_object_mut()?;
                        let properties = schema["properties"].as_object()?;
                        let mut breakable: Vec<(&String, Value)> = properties
                            .iter()
                            .filter_map(|(name, s)| {
                                let s = resolve(document, s);
                                let broken = if variant == Variant::WrongType {
                                    wrong_type(s)
                                } else {
                                    out_of_range(rng, document, s)
                                };
                                broken.map(|b| (name, b))
                            })
                            .collect();
                        if breakable.is_empty() {
                            return None;
                        }
                        let (name, broken) = breakable.swap_remove(rng.usize(..breakable.len()));
                        object.insert(name.clone(), broken);
                    }
                    _ => {}
                }
                Some(value.to_string())
            }
            (_, None) => None,
        };

        let mut headers: Vec<(String, String)> = Vec::new();
        if body.is_some() {
            let content_type = if variant == Variant::WrongContentType {
                "text/plain"
            } else {
                "application/json"
            };
            headers.push(("content-type".to_owned(), content_type.to_owned()));
        }
        if variant == Variant::ContentEncoding {
            headers.push(("content-encoding".to_owned(), "gzip".to_owned()));
        }
        let mut tokenless = true;
        match (variant, token) {
            (Variant::NoToken, _) => {}
            (Variant::BadToken, _) => {
                headers.push(("authorization".to_owned(), "Bearer not.a.jwt".to_owned()));
            }
            (_, Some(token)) if self.secured() => {
                tokenless = false;
                headers.push(("authorization".to_owned(), format!("Bearer {token}")));
            }
            _ => {}
        }
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{uri}", self.base));
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
            .ok()?;
        // The token itself stays out of findings.
        for header in &mut headers {
            if header.0 == "authorization" && !header.1.contains("not.a.jwt") {
                header.1 = "Bearer <token>".to_owned();
            }
        }
        Some(Planned {
            request,
            body,
            headers,
            tokenless,
        })
    }
}

/// `schema`, or what its `$ref` points to in `document`.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..16 {
        let Some(reference) = schema["$ref"].as_str() else {
            return schema;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return schema;
        };
        match document.pointer(pointer) {
            Some(target) => schema = target,
            None => return schema,
        }
    }
    schema
}

fn required_names(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The schema's types, `null` last.
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => {
            let mut ts: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            ts.sort_by_key(|t| *t == "null");
            ts
        }
        _ if schema["properties"].is_object() => vec!["object"],
        _ => Vec::new(),
    }
}

fn integer_bounds(schema: &Value) -> (i64, i64) {
    let (floor, ceiling) = match schema["format"].as_str() {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("int8") => (i64::from(i8::MIN), i64::from(i8::MAX)),
        Some("int16") => (i64::from(i16::MIN), i64::from(i16::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    let low = schema["minimum"]
        .as_i64()
        .or_else(|| schema["exclusiveMinimum"].as_i64().map(|m| m + 1))
        .unwrap_or(floor);
    let high = schema["maximum"]
        .as_i64()
        .or_else(|| schema["exclusiveMaximum"].as_i64().map(|m| m - 1))
        .unwrap_or(ceiling);
    (low, high)
}

/// Characters for strings: ASCII, and some that take two to four bytes in
/// UTF-8, so that a limit counted in bytes shows against one in characters.
const CHARS: &[char] = &[
    'a', 'Z', '0', '-', '_', ' ', 'é', 'ß', '水', '🙂', '/', '?', '%',
];

/// A value that fits `schema`.
fn valid(rng: &mut fastrand::Rng, document: &Value, schema: &Value, depth: usize) -> Value {
    let schema = resolve(document, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array().filter(|o| !o.is_empty()) {
            // Prefer the options that are not `null`.
            let not_null: Vec<&Value> = options
                .iter()
                .filter(|o| resolve(document, o)["type"] != "null")
                .collect();
            let pool: Vec<&Value> = if not_null.is_empty() {
                options.iter().collect()
            } else {
                not_null
            };
            let pick = rng.usize(..pool.len());
            return valid(rng, document, pool[pick], depth + 1);
        }
    }
    if let Some(options) = schema["enum"].as_array().filter(|o| !o.is_empty()) {
        return options[rng.usize(..options.len())].clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    let kind = types(schema).first().copied().unwrap_or("string");
    match kind {
        "integer" => {
            let (low, high) = integer_bounds(schema);
            let value = match rng.u8(..4) {
                0 => low,
                1 => high,
                _ => {
                    let span_high = high.min(low.saturating_add(1000));
                    rng.i64(low..=span_high)
                }
            };
            json!(value)
        }
        "number" => {
            let low = schema["minimum"].as_f64().unwrap_or(-1000.0);
            let high = schema["maximum"].as_f64().unwrap_or(1000.0);
            json!(low + (high - low) * rng.f64())
        }
        "boolean" => json!(rng.bool()),
        "null" => Value::Null,
        "array" if depth < 4 => {
            let low = schema["minItems"].as_u64().unwrap_or(0);
            let high = schema["maxItems"].as_u64().unwrap_or(low + 3).min(low + 3);
            let n = rng.u64(low..=high.max(low));
            Value::Array(
                (0..n)
                    .map(|_| valid(rng, document, &schema["items"], depth + 1))
                    .collect(),
            )
        }
        "object" if depth < 4 => {
            let mut object = Map::new();
            let required = required_names(schema);
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    if required.contains(name) || rng.bool() {
                        object.insert(name.clone(), valid(rng, document, property, depth + 1));
                    }
                }
            }
            Value::Object(object)
        }
        "array" => json!([]),
        "object" => json!({}),
        _ => json!(valid_string(rng, schema)),
    }
}

fn valid_string(rng: &mut fastrand::Rng, schema: &Value) -> String {
    let low = schema["minLength"].as_u64().unwrap_or(0);
    let high = schema["maxLength"].as_u64().unwrap_or(low + 12).max(low);
    // Often at the limits, where byte and character counts part.
    let n = match rng.u8(..4) {
        0 => low,
        1 => high,
        _ => rng.u64(low..=high.min(low + 12)),
    };
    (0..n).map(|_| CHARS[rng.usize(..CHARS.len())]).collect()
}

/// A value as a path or query parameter's text.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A parameter's text that does not fit `schema`, if there is one.
fn invalid_text(rng: &mut fastrand::Rng, document: &Value, schema: &Value) -> Option<String> {
    if let Some(broken) = out_of_range(rng, document, schema)
        && rng.bool()
    {
        return Some(text(&broken));
    }
    match types(schema).first().copied() {
        Some("integer") => {
            Some(["seven", "1.5", "", "0x10", "99999999999999999999999"][rng.usize(..5)].to_owned())
        }
        Some("number") => Some(["many", "", "1,5"][rng.usize(..3)].to_owned()),
        Some("boolean") => Some("maybe".to_owned()),
        _ => out_of_range(rng, document, schema).map(|b| text(&b)),
    }
}

/// A value of another type than `schema` takes, if one exists.
fn wrong_type(schema: &Value) -> Option<Value> {
    let kinds = types(schema);
    if schema["enum"].is_array() {
        return Some(json!(12345));
    }
    let first = kinds.first().copied()?;
    let wrong = match first {
        "integer" | "number" => json!("not a number"),
        "boolean" => json!("maybe"),
        "string" => json!({ "a": 1 }),
        "array" => json!({ "a": 1 }),
        "object" => json!([1, 2]),
        _ => return None,
    };
    Some(wrong)
}

/// A value just past one of `schema`'s limits, if it has one.
fn out_of_range(rng: &mut fastrand::Rng, document: &Value, schema: &Value) -> Option<Value> {
    let schema = resolve(document, schema);
    if let Some(options) = schema["enum"].as_array() {
        let mut candidate = "not_a_variant".to_owned();
        while options.iter().any(|o| o == candidate.as_str()) {
            candidate.push('_');
        }
        return Some(json!(candidate));
    }
    match types(schema).first().copied()? {
        "integer" => {
            let mut past = Vec::new();
            if let Some(max) = schema["maximum"].as_i64().and_then(|m| m.checked_add(1)) {
                past.push(json!(max));
            }
            if let Some(min) = schema["minimum"].as_i64().and_then(|m| m.checked_sub(1)) {
                past.push(json!(min));
            }
            (!past.is_empty()).then(|| past.swap_remove(rng.usize(..past.len())))
        }
        "string" => {
            let mut past = Vec::new();
            if let Some(max) = schema["maxLength"].as_u64() {
                let n = max + 1;
                past.push(json!(
                    (0..n)
                        .map(|_| CHARS[rng.usize(..CHARS.len())])
                        .collect::<String>()
                ));
            }
            if let Some(min) = schema["minLength"].as_u64().filter(|m| *m > 0) {
                past.push(json!("a".repeat(usize::try_from(min - 1).unwrap_or(0))));
            }
            (!past.is_empty()).then(|| past.swap_remove(rng.usize(..past.len())))
        }
        _ => None,
    }
}
