//! Binding what a request carries (route values, the query string, a JSON
//! body) to a message, and the one rule per class of failure:
//!
//! - a path or query parameter that does not parse is `400
//!   request.invalid_parameter`, naming the parameter;
//! - a body that is not JSON is `400 request.invalid_json`;
//! - JSON that does not fit the message (a missing field, a wrong type, an
//!   unknown variant) is `422 request.invalid_body`, naming the field path.
//!
//! The DSL and the extractors ([`Json`](crate::Json), [`Path`](crate::Path),
//! [`QueryParams`](crate::QueryParams)) all answer through here, so a
//! failure gets the same status and code whatever the method or the route.

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::problem::{Problem, ProblemField};

/// Why a request does not make the message.
#[derive(Debug)]
pub(crate) enum BindError {
    /// A path or query parameter that does not parse.
    Parameter { name: String, message: String },
    /// The body does not fit the message: at `field` when known.
    Body {
        field: Option<String>,
        code: &'static str,
        message: String,
    },
    /// The body is not JSON.
    Json { message: String },
}

impl BindError {
    /// The problem answered for it.
    pub(crate) fn problem(self) -> Problem {
        match self {
            Self::Parameter { name, message } => {
                let mut problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "request.invalid_parameter",
                    format!("the parameter `{name}` is not valid: {message}"),
                );
                problem.errors.push(ProblemField {
                    field: name,
                    code: "invalid".to_owned(),
                    message,
                });
                problem
            }
            Self::Body {
                field,
                code,
                message,
            } => {
                let detail = match &field {
                    Some(field) => format!("the body does not fit at `{field}`: {message}"),
                    None => format!("the body does not fit: {message}"),
                };
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "request.invalid_body",
                    detail,
                );
                if let Some(field) = field {
                    problem.errors.push(ProblemField {
                        field,
                        code: code.to_owned(),
                        message,
                    });
                }
                problem
            }
            Self::Json { message } => Problem::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_json",
                format!("the body is not valid JSON: {message}"),
            ),
        }
    }
}

/// The field a serde error at the top level names ("missing field
/// \`id\`", "duplicate field …", "unknown field …"), and the error code
/// for it.
fn named_in(message: &str) -> Option<(String, &'static str)> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    let code = if message.starts_with("missing field") {
        "required"
    } else {
        "invalid"
    };
    Some((message[start..end].to_owned(), code))
}

/// Where a serde error is, as a field path (`items[0].quantity`), with the
/// code for it; `None` when it is about the whole value.
fn located(path: &str, message: &str) -> Option<(String, &'static str)> {
    let within = if path == "." { "" } else { path };
    // Serde reports a missing field at its parent: name the field itself.
    let about_a_field = message.starts_with("missing field")
        || message.starts_with("duplicate field")
        || message.starts_with("unknown field");
    if about_a_field && let Some((name, code)) = named_in(message) {
        return Some(if within.is_empty() {
            (name, code)
        } else {
            (format!("{within}.{name}"), code)
        });
    }
    (!within.is_empty()).then(|| (within.to_owned(), "invalid"))
}

/// Deserializes flat name/value text pairs (route values and query
/// parameters) into `T`, each value parsed by its field's type.
///
/// # Errors
/// [`BindError::Parameter`] naming the first parameter that does not parse
/// or is missing.
pub(crate) fn bind_parameters<T: DeserializeOwned>(
    pairs: &[(String, String)],
) -> Result<T, BindError> {
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    parse_parameters(&encoded)
}

/// Deserializes a query string into `T`, naming the parameter that does
/// not fit.
///
/// # Errors
/// [`BindError::Parameter`].
pub(crate) fn parse_parameters<T: DeserializeOwned>(query: &str) -> Result<T, BindError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let name = located(&path, &message).map_or_else(String::new, |(name, _)| name);
        BindError::Parameter { name, message }
    })
}

/// Parses a JSON body, telling syntax (not JSON: `400`) from data (does not
/// fit `T`: `422`, at the field path).
///
/// # Errors
/// [`BindError::Json`] or [`BindError::Body`].
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, BindError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A body that is not JSON at all is that, even when serde met a
        // field it did not like before the broken part.
        let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
        if inner.is_data() && well_formed() {
            body_error(&path, &inner.to_string())
        } else {
            BindError::Json {
                message: inner.to_string(),
            }
        }
    })?;
    deserializer.end().map_err(|e| BindError::Json {
        message: e.to_string(),
    })?;
    Ok(value)
}

fn body_error(path: &str, message: &str) -> BindError {
    // serde_json appends "at line 1 column 9" to data errors: the path says
    // where, and better.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
        .to_owned();
    match located(path, &message) {
        Some((field, code)) => BindError::Body {
            field: Some(field),
            code,
            message,
        },
        None => BindError::Body {
            field: None,
            code: "invalid",
            message,
        },
    }
}

/// Deserializes a command from its body's `fields` and the route `values`.
///
/// Each route value is bound as a JSON integer or boolean when it reads as
/// one, else as a string, and as the string it arrived as when its field
/// rejects the typed value. A route value that fits neither way is a bad
/// parameter. A body field that the route also names must carry the same
/// value: the route decides which resource is meant, and a body that says
/// otherwise is refused rather than silently overruled.
///
/// # Errors
/// [`BindError::Parameter`] for a route value, [`BindError::Body`] for the
/// body.
pub(crate) fn bind_command<C: DeserializeOwned>(
    mut fields: Map<String, Value>,
    values: &[(String, String)],
) -> Result<C, BindError> {
    let mut typed = Vec::new();
    for (name, raw) in values {
        let parsed = if let Ok(n) = raw.parse::<i64>() {
            Value::from(n)
        } else if let Ok(n) = raw.parse::<u64>() {
            Value::from(n)
        } else if let Ok(b) = raw.parse::<bool>() {
            Value::from(b)
        } else {
            Value::from(raw.clone())
        };
        if let Some(sent) = fields.get(name)
            && *sent != parsed
            && sent.as_str() != Some(raw.as_str())
        {
            return Err(BindError::Body {
                field: Some(name.clone()),
                code: "path_mismatch",
                message: format!(
                    "`{name}` is given by the path ({raw}); leave it out of the body or send the same value"
                ),
            });
        }
        if !parsed.is_string() {
            typed.push(name.as_str());
        }
        fields.insert(name.clone(), parsed);
    }
    // The first complaint about each route value, said of the typed value.
    let mut first: Vec<(&str, String)> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(Value::Object(fields.clone())) {
            Ok(bound) => return Ok(bound),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let Some((name, raw)) = values.iter().find(|(name, _)| *name == path) else {
            return Err(body_error(&path, &message));
        };
        if let Some(position) = typed.iter().position(|typed| *typed == name) {
            // A route value read as a number that the field wants as a
            // string: give it as the string it arrived as, and retry.
            typed.swap_remove(position);
            first.push((name.as_str(), message));
            fields.insert(name.clone(), Value::from(raw.clone()));
            continue;
        }
        let message = first
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(message, |(_, m)| m);
        return Err(BindError::Parameter {
            name: name.clone(),
            message,
        });
    }
}

/// The answer to a body without a JSON content type.
pub(crate) fn not_json() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "request.content_type",
        "expected a body with `content-type: application/json`",
    )
}

pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Rename {
        id: u64,
        code: String,
        name: String,
    }

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn route_values_bind_as_numbers_or_strings() {
        let mut body = Map::new();
        body.insert("name".into(), "new".into());
        let bound: Rename = bind_command(body, &values(&[("id", "7"), ("code", "42")])).unwrap();
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
        let problem = bind_command::<Rename>(body, &[]).unwrap_err().problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "name");
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut body = Map::new();
        body.insert("code".into(), "x".into());
        let problem = bind_command::<Rename>(body, &values(&[("id", "1")]))
            .unwrap_err()
            .problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (422, "request.invalid_body")
        );
        assert_eq!(problem.errors[0].field, "name");
        assert_eq!(problem.errors[0].code, "required");
    }

    #[test]
    fn a_route_value_that_does_not_parse_is_a_bad_parameter() {
        let mut body = Map::new();
        body.insert("code".into(), "x".into());
        body.insert("name".into(), "y".into());
        let problem = bind_command::<Rename>(body, &values(&[("id", "seven")]))
            .unwrap_err()
            .problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (400, "request.invalid_parameter")
        );
        assert_eq!(problem.errors[0].field, "id");
    }

    #[test]
    fn a_body_may_not_contradict_the_path() {
        let mut body = Map::new();
        body.insert("id".into(), 7002.into());
        body.insert("code".into(), "x".into());
        body.insert("name".into(), "y".into());
        let problem = bind_command::<Rename>(body.clone(), &values(&[("id", "7001")]))
            .unwrap_err()
            .problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "id");
        body.insert("id".into(), 7001.into());
        let same: Rename = bind_command(body, &values(&[("id", "7001")])).unwrap();
        assert_eq!(same.id, 7001);
    }

    #[test]
    fn parameters_name_the_culprit() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Page {
            limit: u32,
            after: Option<u64>,
        }
        let wrong = parse_parameters::<Page>("limit=ten").unwrap_err().problem();
        assert_eq!(
            (wrong.status, wrong.code.as_str()),
            (400, "request.invalid_parameter")
        );
        assert_eq!(wrong.errors[0].field, "limit");
        let missing = parse_parameters::<Page>("after=3").unwrap_err().problem();
        assert_eq!(missing.errors[0].field, "limit");
        assert!(parse_parameters::<Page>("limit=3").is_ok());
    }

    #[test]
    fn json_syntax_is_400_and_shape_is_422() {
        let syntax = parse_json::<Rename>(b"{ not json").unwrap_err().problem();
        assert_eq!(
            (syntax.status, syntax.code.as_str()),
            (400, "request.invalid_json")
        );
        let trailing = parse_json::<Value>(b"{} x").unwrap_err().problem();
        assert_eq!(trailing.status, 400);
        let broken_after = parse_json::<Rename>(b"{}}").unwrap_err().problem();
        assert_eq!(broken_after.status, 400);
        let shape = parse_json::<Rename>(br#"{"id":"x","code":"c","name":"n"}"#)
            .unwrap_err()
            .problem();
        assert_eq!((shape.status, shape.errors[0].field.as_str()), (422, "id"));
        let missing = parse_json::<Rename>(br#"{"id":1}"#).unwrap_err().problem();
        assert_eq!(
            (missing.status, missing.errors[0].field.as_str()),
            (422, "code")
        );
    }
}
