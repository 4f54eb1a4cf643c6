//! Admission as the apiserver does it for the committed CRD, minus the apiserver: the
//! structural OpenAPI checks (types, required, enum, bounds, unknown fields) here, the CEL
//! rules through kube-cel (which applies the schema defaults first, as admission does).

use serde_json::Value;

/// The openAPIV3Schema of the committed CRD.
pub fn committed_schema() -> Value {
    let path = package_dir().join("..").join(infergate_operator::crdgen::CRD_PATH);
    let text = std::fs::read_to_string(&path).expect("committed CRD");
    let crd: Value = serde_saphyr::from_str(&text).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every reason the apiserver would reject `object`; empty when it would admit it.
pub fn admission_errors(schema: &Value, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    structural(schema, object, "", true, &mut errors);
    if errors.is_empty() {
        if let Err(cel) = kube_cel::validate(schema, object, None) {
            errors.push(format!("{cel:?}"));
        }
    }
    errors
}

fn structural(schema: &Value, value: &Value, path: &str, root: bool, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(fields) = value.as_object() else {
                errors.push(format!("{path}: expected an object"));
                return;
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str() {
                    if !fields.contains_key(name) {
                        errors.push(format!("{path}.{name}: required"));
                    }
                }
            }
            for (name, field) in fields {
                let field_path = format!("{path}.{name}");
                if let Some(field_schema) = schema["properties"].get(name) {
                    structural(field_schema, field, &field_path, false, errors);
                } else if schema["additionalProperties"].is_object() {
                    structural(&schema["additionalProperties"], field, &field_path, false, errors);
                } else if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    // Validated by the apiserver itself, not by the CRD schema.
                } else if schema["x-kubernetes-preserve-unknown-fields"] != Value::Bool(true) {
                    errors.push(format!("{field_path}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    structural(&schema["items"], item, &format!("{path}[{i}]"), false, errors);
                }
            }
            None => errors.push(format!("{path}: expected an array")),
        },
        Some("string") if !value.is_string() => errors.push(format!("{path}: expected a string")),
        Some("boolean") if !value.is_boolean() => errors.push(format!("{path}: expected a boolean")),
        Some("integer") if !(value.is_i64() || value.is_u64()) => errors.push(format!("{path}: expected an integer")),
        Some("number") if !value.is_number() => errors.push(format!("{path}: expected a number")),
        _ => {}
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            if number < min {
                errors.push(format!("{path}: {number} is below the minimum {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if number > max {
                errors.push(format!("{path}: {number} is above the maximum {max}"));
            }
        }
    }
}

/// The package's folder: cargo sets CARGO_MANIFEST_DIR when it runs the binary; the build-time
/// value is only a fallback, since a build cache shared between checkouts can hand this binary
/// to another checkout than the one it was compiled in.
fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
