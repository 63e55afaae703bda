//! The OpenAPI 3.1 document of the DSL endpoints, and a docs page that
//! renders it in the browser with no external assets.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use mamey_core::cqrs::{Command, Query};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Schema, Type};

use crate::auth::Auth;

pub(crate) type Schemas = Vec<(String, RefOr<Schema>)>;

/// One endpoint in the document.
pub(crate) struct EndpointDoc {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) operation: Value,
}

pub(crate) struct Describe;

impl Describe {
    pub(crate) fn query<Q>(
        method: &Method,
        path: &str,
        auth: &Auth,
        summary: Option<&str>,
        schemas: &mut Schemas,
    ) -> EndpointDoc
    where
        Q: Query + ToSchema,
        Q::Output: ToSchema,
    {
        Q::schemas(schemas);
        <Q::Output as ToSchema>::schemas(schemas);
        let route = route_names(path);
        let message = serde_json::to_value(Q::schema()).unwrap_or(Value::Null);
        let mut parameters = path_parameters(&route, &message);
        if let Some(properties) = message["properties"].as_object() {
            let required = required(&message);
            for (name, schema) in properties {
                if !route.contains(name) {
                    parameters.push(json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": schema,
                    }));
                }
            }
        }
        let mut responses = serde_json::Map::new();
        responses.insert(
            "200".into(),
            json!({
                "description": "The answer.",
                "content": { "application/json": { "schema": not_null(<Q::Output as utoipa::PartialSchema>::schema()) } }
            }),
        );
        let mut operation = json!({
            "operationId": <Q as Query>::name(),
            "parameters": parameters,
            "responses": errors(responses, false, auth),
        });
        finish(&mut operation, auth, summary);
        EndpointDoc {
            method: method.clone(),
            path: path.to_owned(),
            operation,
        }
    }

    pub(crate) fn command<C>(
        method: &Method,
        path: &str,
        auth: &Auth,
        summary: Option<&str>,
        status: StatusCode,
        schemas: &mut Schemas,
    ) -> EndpointDoc
    where
        C: Command + ToSchema,
    {
        let name = <C as ToSchema>::name().into_owned();
        C::schemas(schemas);
        schemas.push((name.clone(), C::schema()));
        let route = route_names(path);
        let message = serde_json::to_value(C::schema()).unwrap_or(Value::Null);
        let parameters = path_parameters(&route, &message);
        let mut responses = serde_json::Map::new();
        responses.insert(
            status.as_str().to_owned(),
            json!({ "description": status.canonical_reason().unwrap_or("Done.") }),
        );
        let mut operation = json!({
            "operationId": <C as Command>::name(),
            "parameters": parameters,
            "responses": errors(responses, true, auth),
        });
        // The body is what the route does not give: the whole message on
        // `/orders`, the rest of it on `/orders/{id}`, and nothing when the
        // route gives every field.
        if let Some((schema, required)) = body_schema(&name, &route, message) {
            operation["requestBody"] = json!({
                "required": required,
                "content": { "application/json": { "schema": schema } }
            });
        }
        finish(&mut operation, auth, summary);
        EndpointDoc {
            method: method.clone(),
            path: path.to_owned(),
            operation,
        }
    }
}

fn required(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The route's values as path parameters, each typed (limits included) as
/// the message's field of the same name; a name the message lacks is a
/// string.
fn path_parameters(route: &[String], message: &Value) -> Vec<Value> {
    route
        .iter()
        .map(|name| {
            let schema = message["properties"]
                .get(name)
                .cloned()
                .unwrap_or_else(|| json!({ "type": "string" }));
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

/// The request body's schema and whether it is required, or `None` when
/// the route gives every field.
fn body_schema(name: &str, route: &[String], mut message: Value) -> Option<(Value, bool)> {
    let Some(properties) = message["properties"].as_object_mut() else {
        // Not an object (an enum, say): the body is the whole message.
        return Some((
            json!({ "$ref": format!("#/components/schemas/{name}") }),
            true,
        ));
    };
    if route.is_empty() {
        let required = !required(&message).is_empty();
        return Some((
            json!({ "$ref": format!("#/components/schemas/{name}") }),
            required,
        ));
    }
    properties.retain(|field, _| !route.contains(field));
    if properties.is_empty() {
        return None;
    }
    if let Some(required) = message["required"].as_array_mut() {
        required.retain(|field| !field.as_str().is_some_and(|f| route.iter().any(|r| r == f)));
    }
    let required = !required(&message).is_empty();
    Some((message, required))
}

/// The error answers every operation can give, and the ones its body and
/// its `Auth` add, as references to `components.responses`.
fn errors(
    mut responses: serde_json::Map<String, Value>,
    reads_body: bool,
    auth: &Auth,
) -> serde_json::Map<String, Value> {
    for (status, name, _) in ERROR_RESPONSES {
        let applies = match *status {
            "401" => *auth != Auth::Anonymous,
            "403" => matches!(auth, Auth::Roles(_) | Auth::Policy(_)),
            "408" => reads_body,
            _ => true,
        };
        if applies {
            responses.insert(
                (*status).to_owned(),
                json!({ "$ref": format!("#/components/responses/{name}") }),
            );
        }
    }
    responses
}

/// Every error answer of a DSL endpoint: status, name in
/// `components.responses`, and when it is given.
const ERROR_RESPONSES: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "A path or query parameter does not parse (`request.invalid_parameter`, named in `errors`), the body is not JSON (`request.invalid_json`), or the handler refused the input without naming a field.",
    ),
    (
        "401",
        "Unauthorized",
        "No valid bearer token (`auth.unauthorized`).",
    ),
    (
        "403",
        "Forbidden",
        "The caller lacks the role or policy (`auth.forbidden`).",
    ),
    (
        "404",
        "NotFound",
        "Nothing was found (`not_found`), or the handler's `not_found` error.",
    ),
    (
        "408",
        "RequestTimeout",
        "The body did not arrive within `http.request_timeout` (`request.timeout`).",
    ),
    ("409", "Conflict", "The handler's `conflict` error."),
    (
        "413",
        "ContentTooLarge",
        "The body is over `http.body_limit` (`request.too_large`).",
    ),
    (
        "414",
        "UriTooLong",
        "The URI is over `http.max_uri_length` (`request.uri_too_long`).",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "A body without `content-type: application/json` (`request.content_type`), or a `content-encoding` other than `identity` (`request.unsupported_encoding`).",
    ),
    (
        "422",
        "UnprocessableContent",
        "The JSON does not fit the message (`request.invalid_body`), or the message breaks its validation rules; the fields are in `errors`.",
    ),
    (
        "431",
        "HeadersTooLarge",
        "The headers are over `http.max_header_bytes` (`request.headers_too_large`).",
    ),
    (
        "500",
        "InternalError",
        "An internal error (`internal`); the details are in the service's logs.",
    ),
    (
        "503",
        "Unavailable",
        "Too many requests in progress (`request.overloaded`, with `retry-after`), or a dependency is unavailable.",
    ),
    (
        "504",
        "GatewayTimeout",
        "The handler took longer than `http.request_timeout` (`request.timeout`).",
    ),
];

/// The names in a route template: `/orders/{id}` → `["id"]`.
fn route_names(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*').to_owned())
        .collect()
}

/// `Option<T>`'s schema is "null or T"; a `200` answer is never null.
fn not_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    if let RefOr::T(Schema::OneOf(one_of)) = &schema
        && one_of.items.len() == 2
        && matches!(&one_of.items[0], RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into())
    {
        return one_of.items[1].clone();
    }
    schema
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn finish(operation: &mut Value, auth: &Auth, summary: Option<&str>) {
    if let Some(summary) = summary {
        operation["summary"] = summary.into();
    }
    if *auth != Auth::Anonymous {
        operation["security"] = json!([{ "bearer": [] }]);
        let rule = match auth {
            Auth::Roles(roles) => format!("Requires one of the roles: {}.", roles.join(", ")),
            Auth::Policy(name) => format!("Requires policy `{name}`."),
            _ => "Requires a bearer token.".to_owned(),
        };
        operation["description"] = rule.into();
    }
}

/// The whole document.
pub(crate) fn document(
    title: &str,
    version: &str,
    endpoints: Vec<EndpointDoc>,
    schemas: Schemas,
) -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for endpoint in endpoints {
        paths.entry(endpoint.path).or_default().insert(
            endpoint.method.as_str().to_ascii_lowercase(),
            endpoint.operation,
        );
    }
    let mut components: BTreeMap<String, Value> = schemas
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    components.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": { "title": title, "version": version },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": error_responses(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } }
        }
    })
}

fn error_responses() -> serde_json::Map<String, Value> {
    ERROR_RESPONSES
        .iter()
        .map(|(_, name, description)| ((*name).to_owned(), problem(description)))
        .collect()
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "code": { "type": "string" },
            "correlation_id": { "type": "string" },
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "code", "message"],
                    "properties": {
                        "field": { "type": "string" },
                        "code": { "type": "string" },
                        "message": { "type": "string" }
                    }
                }
            }
        }
    })
}

/// A page listing the operations of `/openapi.json` with their schemas;
/// plain HTML and a little script, nothing fetched from elsewhere.
pub(crate) const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.5rem}details{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.4rem .8rem}
summary{cursor:pointer}code.m{display:inline-block;min-width:4.5rem;font-weight:bold}
.get{color:#0a6}.post{color:#06c}.put{color:#a60}.delete{color:#c33}pre{background:#f6f6f6;padding:.6rem;overflow:auto}
</style></head><body><h1 id="title">API</h1><div id="ops">Loading /openapi.json…</div>
<script>
fetch('openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('title').textContent=doc.info.title+' '+doc.info.version;
  const ops=document.getElementById('ops');ops.textContent='';
  const show=v=>JSON.stringify(v,null,2);
  for(const [path,item] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(item)){
      const d=document.createElement('details');
      const s=document.createElement('summary');
      const m=document.createElement('code');m.className='m '+method;m.textContent=method.toUpperCase();
      s.append(m,' '+path+(op.summary?' — '+op.summary:''));d.append(s);
      const pre=document.createElement('pre');pre.textContent=show(op);d.append(pre);ops.append(d);
    }
  }
  const d=document.createElement('details');const s=document.createElement('summary');
  s.textContent='Schemas';d.append(s);const pre=document.createElement('pre');
  pre.textContent=show(doc.components.schemas);d.append(pre);ops.append(d);
}).catch(e=>{document.getElementById('ops').textContent='Could not load /openapi.json: '+e});
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_in_order() {
        assert_eq!(route_names("/orders/{id}/items/{item}"), ["id", "item"]);
        assert!(route_names("/orders").is_empty());
    }
}
