//! Values made from JSON schemas: ones that fit, and ones that break them.

use serde_json::{Map, Value, json};

/// `schema`, or what its `$ref` points to in `document`.
pub(super) fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
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

pub(super) fn required_names(schema: &Value) -> Vec<String> {
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
pub(super) fn types(schema: &Value) -> Vec<&str> {
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

pub(super) fn integer_bounds(schema: &Value) -> (i64, i64) {
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
pub(super) fn valid(
    rng: &mut fastrand::Rng,
    document: &Value,
    schema: &Value,
    depth: usize,
) -> Value {
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

pub(super) fn valid_string(rng: &mut fastrand::Rng, schema: &Value) -> String {
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
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A parameter's text that does not fit `schema`, if there is one.
pub(super) fn invalid_text(
    rng: &mut fastrand::Rng,
    document: &Value,
    schema: &Value,
) -> Option<String> {
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
pub(super) fn wrong_type(schema: &Value) -> Option<Value> {
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
pub(super) fn out_of_range(
    rng: &mut fastrand::Rng,
    document: &Value,
    schema: &Value,
) -> Option<Value> {
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
