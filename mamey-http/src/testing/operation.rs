//! One operation of the document, and the requests planned for it.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{Value, json};

use super::values::{invalid_text, out_of_range, required_names, resolve, text, valid, wrong_type};
use super::{Planned, Variant};

/// One operation of the document.
pub(super) struct Operation<'a> {
    pub(super) base: &'a str,
    pub(super) method: Method,
    pub(super) template: &'a str,
    pub(super) operation: &'a Value,
    pub(super) document: &'a Value,
}

/// A parameter of an operation.
pub(super) struct Parameter<'a> {
    pub(super) name: &'a str,
    pub(super) in_path: bool,
    pub(super) required: bool,
    pub(super) schema: &'a Value,
}

impl<'a> Operation<'a> {
    pub(super) fn secured(&self) -> bool {
        self.operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    }

    pub(super) fn lists(&self, status: u16) -> bool {
        let Some(responses) = self.operation["responses"].as_object() else {
            return false;
        };
        let range = format!("{}XX", status / 100);
        responses.contains_key(&status.to_string())
            || responses.contains_key(&range)
            || responses.contains_key("default")
    }

    pub(super) fn parameters(&self) -> Vec<Parameter<'a>> {
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

    pub(super) fn body_schema(&self) -> Option<&'a Value> {
        let schema = &self.operation["requestBody"]["content"]["application/json"]["schema"];
        (!schema.is_null()).then(|| resolve(self.document, schema))
    }

    pub(super) fn pick_variant(&self, rng: &mut fastrand::Rng, round: usize) -> Variant {
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
    pub(super) fn request(
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
