//! [`ConfigError`]: what is wrong with the configuration, and where.

use std::fmt;

use figment::error::Kind;
use figment::{Figment, Metadata, Source};

/// One or more problems found while loading or reading configuration.
///
/// Each problem names the key (`http.port`), where the offending value came
/// from (a file path or an environment variable name) and what was expected:
///
/// ```text
/// config key `http.port` (from environment variable `MAMEY__HTTP__PORT`): invalid type: found string "abc", expected u16
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

/// `Debug` prints the message, so an error returned from `main` reads well.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One problem in a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `"http.port"`; empty for the whole document.
    pub key: String,
    /// Where the value came from, e.g. `file "config/dev.toml"` or
    /// `` environment variable `MAMEY__HTTP__PORT` ``; `None` when the key is
    /// missing everywhere.
    pub source: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// A problem with `key`, found by a plug-in's own validation.
    ///
    /// Prefer [`Config::invalid`](super::Config::invalid), which also names
    /// the source of the value.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                key: key.into(),
                source: None,
                message: message.into(),
            }],
        }
    }

    /// The problems, at least one.
    #[must_use]
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    pub(crate) fn with_source(mut self, source: Option<&str>) -> Self {
        for problem in &mut self.problems {
            if problem.source.is_none() {
                problem.source = source.map(str::to_owned);
            }
        }
        self
    }

    /// Converts figment's errors, naming key and source for each. `section`
    /// is the key the value was extracted from (empty for the whole document).
    pub(crate) fn from_figment(error: figment::Error, figment: &Figment, section: &str) -> Self {
        let problems = error
            .into_iter()
            .map(|e| {
                let mut path = section_first(e.path.clone(), section);
                let message = match &e.kind {
                    Kind::UnknownField(field, expected) => {
                        push_unless_last(&mut path, field);
                        let expected: Vec<String> =
                            expected.iter().map(|k| format!("`{k}`")).collect();
                        if expected.is_empty() {
                            "unknown key; this section takes no keys".to_owned()
                        } else {
                            format!("unknown key; expected one of {}", expected.join(", "))
                        }
                    }
                    Kind::MissingField(field) => {
                        push_unless_last(&mut path, field);
                        "missing required key".to_owned()
                    }
                    Kind::InvalidType(actual, expected) => {
                        format!("invalid type: found {actual}, expected {expected}")
                    }
                    Kind::InvalidValue(actual, expected) => {
                        format!("invalid value: found {actual}, expected {expected}")
                    }
                    other => other.to_string(),
                };
                let key = path.join(".");
                let metadata = if key.is_empty() {
                    e.metadata.as_ref()
                } else {
                    figment.find_metadata(&key).or(e.metadata.as_ref())
                };
                let source = metadata.map(|m| describe_source(m, &path));
                // An overlay's values are secrets more often than not: say
                // what kind of value was found, never the value.
                let message = if source.as_deref().is_some_and(|s| s.starts_with("overlay ")) {
                    match &e.kind {
                        Kind::InvalidType(actual, expected)
                        | Kind::InvalidValue(actual, expected) => {
                            format!(
                                "invalid value: found {}, expected {expected}",
                                kind_of(actual)
                            )
                        }
                        Kind::UnknownVariant(_, expected) => {
                            format!("unknown variant, expected one of {}", expected.join(", "))
                        }
                        _ => message,
                    }
                } else {
                    message
                };
                ConfigProblem {
                    key,
                    source,
                    message,
                }
            })
            .collect();
        Self { problems }
    }
}

/// What kind of value `actual` is, without the value itself.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option | Actual::NewtypeStruct => "an empty value",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value",
    }
}

/// Figment appends the key given to `extract_inner` after the path inside
/// the value; put the section first, whichever order a version uses.
fn section_first(mut path: Vec<String>, section: &str) -> Vec<String> {
    let prefix: Vec<&str> = section.split('.').filter(|s| !s.is_empty()).collect();
    let n = prefix.len();
    if n == 0 || (path.len() >= n && path[..n].iter().zip(&prefix).all(|(a, b)| a == b)) {
        return path;
    }
    if path.len() >= n
        && path[path.len() - n..]
            .iter()
            .zip(&prefix)
            .all(|(a, b)| a == b)
    {
        path.truncate(path.len() - n);
    }
    prefix.iter().map(|s| (*s).to_owned()).chain(path).collect()
}

fn push_unless_last(path: &mut Vec<String>, field: &str) {
    if path.last().map(String::as_str) != Some(field) {
        path.push(field.to_owned());
    }
}

/// `file "config/dev.toml"`, `` environment variable `MAMEY__HTTP__PORT` ``,
/// or the provider's name.
pub(super) fn describe_source(metadata: &Metadata, path: &[String]) -> String {
    match &metadata.source {
        Some(Source::File(file)) => format!("file \"{}\"", file.display()),
        _ if metadata.name == "environment variable" => {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            format!(
                "environment variable `{}`",
                metadata.interpolate(&figment::Profile::Default, &keys)
            )
        }
        _ => metadata.name.to_string(),
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str("configuration")?;
        } else {
            write!(f, "config key `{}`", self.key)?;
        }
        if let Some(source) = &self.source {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
