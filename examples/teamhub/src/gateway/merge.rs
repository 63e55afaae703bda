//! Merging the services' OpenAPI documents into the gateway's: each
//! service's paths under `/api/{service}`, tagged with its name, operation
//! ids prefixed with it; the components of all, a name that two services
//! define differently renamed `{service}.{name}` in each (and their
//! `$ref`s with it). A service whose document could not be had is listed
//! under `x-missing` with the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// The component kinds whose names can collide.
const KINDS: [&str; 2] = ["schemas", "responses"];

/// One service's document, or why there is none.
pub(super) type Fetched = (&'static str, Result<Value, String>);

/// The merged document of `documents`.
pub(super) fn merge(version: &str, documents: Vec<Fetched>) -> Value {
    let mut missing = Map::new();
    let mut present = Vec::new();
    for (service, document) in documents {
        match document {
            Ok(document) => present.push((service, document)),
            Err(why) => {
                missing.insert(service.to_owned(), why.into());
            }
        }
    }
    let renames = collisions(&present);
    let mut paths = Map::new();
    let mut components: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut security_schemes = Map::new();
    for (service, mut document) in present {
        rewrite_refs(&mut document, service, &renames);
        for (path, mut item) in take_object(&mut document["paths"]) {
            label_operations(&mut item, service);
            paths.insert(format!("/api/{service}{path}"), item);
        }
        for kind in KINDS {
            let merged = components.entry(kind).or_default();
            for (name, component) in take_object(&mut document["components"][kind]) {
                let name = if renames.contains(&(kind, name.clone())) {
                    format!("{service}.{name}")
                } else {
                    name
                };
                merged.insert(name, component);
            }
        }
        security_schemes.extend(take_object(&mut document["components"]["securitySchemes"]));
    }
    let mut merged = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "teamhub",
            "version": version,
            "description": "The public API of teamhub, through its gateway: each service under /api/{service}."
        },
        "paths": paths,
        "components": {
            "schemas": components.remove("schemas").unwrap_or_default(),
            "responses": components.remove("responses").unwrap_or_default(),
            "securitySchemes": security_schemes,
        }
    });
    if !missing.is_empty() {
        merged["x-missing"] = missing.into();
    }
    merged
}

/// The (kind, name) pairs that more than one service defines, differently.
fn collisions(documents: &[(&str, Value)]) -> BTreeSet<(&'static str, String)> {
    let mut seen: BTreeMap<(&'static str, &str), Vec<&Value>> = BTreeMap::new();
    for (_, document) in documents {
        for kind in KINDS {
            if let Some(components) = document["components"][kind].as_object() {
                for (name, component) in components {
                    seen.entry((kind, name.as_str()))
                        .or_default()
                        .push(component);
                }
            }
        }
    }
    seen.into_iter()
        .filter(|(_, versions)| versions.iter().any(|v| *v != versions[0]))
        .map(|((kind, name), _)| (kind, name.to_owned()))
        .collect()
}

/// Points `service`'s `$ref`s to renamed components at their new names.
fn rewrite_refs(value: &mut Value, service: &str, renames: &BTreeSet<(&'static str, String)>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = inner
                    && let Some(renamed) = renamed_ref(target, service, renames)
                {
                    *target = renamed;
                } else {
                    rewrite_refs(inner, service, renames);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_refs(item, service, renames);
            }
        }
        _ => {}
    }
}

/// `#/components/{kind}/{name}` of a renamed component, renamed.
fn renamed_ref(
    target: &str,
    service: &str,
    renames: &BTreeSet<(&'static str, String)>,
) -> Option<String> {
    let rest = target.strip_prefix("#/components/")?;
    let (kind, name) = rest.split_once('/')?;
    let kind = KINDS.into_iter().find(|k| *k == kind)?;
    renames
        .contains(&(kind, name.to_owned()))
        .then(|| format!("#/components/{kind}/{service}.{name}"))
}

/// Tags each operation of a path item with the service, and prefixes its
/// operation id, so that ids stay unique across services.
fn label_operations(item: &mut Value, service: &str) {
    let Some(operations) = item.as_object_mut() else {
        return;
    };
    for operation in operations.values_mut().filter_map(Value::as_object_mut) {
        if let Some(Value::String(id)) = operation.get_mut("operationId") {
            *id = format!("{service}.{id}");
        }
        operation.insert("tags".into(), json!([service]));
    }
}

/// The object at `value`, taken out (empty when it is none).
fn take_object(value: &mut Value) -> Map<String, Value> {
    match value.take() {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(path: &str, schema: &str, definition: &Value) -> Value {
        json!({
            "openapi": "3.1.0",
            "paths": {
                path: { "get": {
                    "operationId": "GetIt",
                    "responses": {
                        "200": { "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
                        "401": { "$ref": "#/components/responses/Unauthorized" }
                    }
                } }
            },
            "components": {
                "schemas": { schema: definition, "Problem": { "type": "object" } },
                "responses": { "Unauthorized": { "description": "No token." } },
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
            }
        })
    }

    #[test]
    fn paths_go_under_their_service() {
        let merged = merge(
            "1",
            vec![
                (
                    "boards",
                    Ok(document(
                        "/cards/{cardId}",
                        "Card",
                        &json!({ "type": "object" }),
                    )),
                ),
                (
                    "chat",
                    Ok(document(
                        "/messages/{messageId}",
                        "Message",
                        &json!({ "type": "string" }),
                    )),
                ),
            ],
        );
        let card = &merged["paths"]["/api/boards/cards/{cardId}"]["get"];
        assert_eq!(card["operationId"], "boards.GetIt");
        assert_eq!(card["tags"], json!(["boards"]));
        assert!(merged["paths"]["/api/chat/messages/{messageId}"]["get"].is_object());
        let schemas = merged["components"]["schemas"].as_object().unwrap();
        // Sorted: with serde_json's `preserve_order` (another crate may turn
        // it on) keys keep insertion order.
        let mut names: Vec<&str> = schemas.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["Card", "Message", "Problem"],
            "identical ones are shared"
        );
        assert_eq!(
            card["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Card"
        );
        assert!(merged["components"]["securitySchemes"]["bearer"].is_object());
        assert!(merged.get("x-missing").is_none());
    }

    #[test]
    fn a_name_defined_twice_differently_is_prefixed_with_each_service() {
        let merged = merge(
            "1",
            vec![
                (
                    "boards",
                    Ok(document("/a", "Page", &json!({ "type": "object" }))),
                ),
                (
                    "chat",
                    Ok(document("/b", "Page", &json!({ "type": "array" }))),
                ),
            ],
        );
        let schemas = &merged["components"]["schemas"];
        assert_eq!(schemas["boards.Page"]["type"], "object");
        assert_eq!(schemas["chat.Page"]["type"], "array");
        assert!(schemas.get("Page").is_none());
        let reference = |path: &str| {
            merged["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].clone()
        };
        assert_eq!(
            reference("/api/boards/a"),
            "#/components/schemas/boards.Page"
        );
        assert_eq!(reference("/api/chat/b"), "#/components/schemas/chat.Page");
        assert_eq!(
            merged["paths"]["/api/chat/b"]["get"]["responses"]["401"]["$ref"],
            "#/components/responses/Unauthorized",
            "an identical component keeps its name"
        );
    }

    #[test]
    fn a_missing_service_is_noted_not_fatal() {
        let merged = merge(
            "1",
            vec![
                ("boards", Ok(document("/a", "A", &json!({})))),
                ("chat", Err("unavailable".into())),
            ],
        );
        assert!(merged["paths"]["/api/boards/a"].is_object());
        assert_eq!(merged["x-missing"]["chat"], "unavailable");
        let none = merge("1", vec![("chat", Err("unavailable".into()))]);
        assert_eq!(none["paths"], json!({}));
    }
}
