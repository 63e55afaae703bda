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
use serde_json::Value;

use crate::problem::PROBLEM_JSON;

mod operation;
mod values;

use operation::Operation;

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
