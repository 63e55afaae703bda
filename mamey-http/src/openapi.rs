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
        let mut parameters = Vec::new();
        if let RefOr::T(Schema::Object(object)) = Q::schema() {
            for (name, schema) in &object.properties {
                let in_path = route.contains(name);
                parameters.push(json!({
                    "name": name,
                    "in": if in_path { "path" } else { "query" },
                    "required": in_path || object.required.contains(name),
                    "schema": schema,
                }));
            }
        }
        let mut operation = json!({
            "operationId": <Q as Query>::name(),
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "The answer.",
                    "content": { "application/json": { "schema": not_null(<Q::Output as utoipa::PartialSchema>::schema()) } }
                },
                "400": problem("The query parameters do not fit."),
                "404": problem("Nothing was found."),
            }
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
        let parameters: Vec<Value> = route_names(path)
            .into_iter()
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut responses = serde_json::Map::new();
        responses.insert(
            status.as_str().to_owned(),
            json!({ "description": status.canonical_reason().unwrap_or("Done.") }),
        );
        responses.insert("400".into(), problem("The body is malformed."));
        responses.insert("415".into(), problem("The body is not JSON."));
        responses.insert("422".into(), problem("The body does not fit the command."));
        let mut operation = json!({
            "operationId": <C as Command>::name(),
            "parameters": parameters,
            "requestBody": {
                "required": *method != Method::DELETE,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } }
            },
            "responses": responses,
        });
        finish(&mut operation, auth, summary);
        EndpointDoc {
            method: method.clone(),
            path: path.to_owned(),
            operation,
        }
    }
}

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
        let responses = &mut operation["responses"];
        responses["401"] = problem("No valid bearer token.");
        if matches!(auth, Auth::Roles(_) | Auth::Policy(_)) {
            responses["403"] = problem("The caller may not do this.");
        }
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
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } }
        }
    })
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
