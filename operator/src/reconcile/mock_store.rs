//! The apiserver's copy of one InferenceDeployment, kept the way a real apiserver keeps it, for
//! the mock apiservers of the reconcile tests: every write that changes the object bumps its
//! resourceVersion, a status write conditioned on another resourceVersion is answered 409, and
//! merge and JSON patches change what later reads return.

use serde_json::{json, Value};

use crate::crd::InferenceDeployment;

pub const INFDS: &str = "/apis/infergate.dev/v1alpha1/namespaces/ml/inferencedeployments";

pub struct StoredObject {
    pub object: Value,
}

impl StoredObject {
    pub fn new(obj: &InferenceDeployment) -> Self {
        Self { object: serde_json::to_value(obj).expect("object serializes") }
    }

    /// The stored object as a reconcile would get it from the watch.
    pub fn current(&self) -> InferenceDeployment {
        serde_json::from_value(self.object.clone()).expect("stored object deserializes")
    }

    pub fn resource_version(&self) -> String {
        self.object["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string()
    }

    fn bump(&mut self) {
        let next = self.resource_version().parse::<u64>().unwrap_or(0) + 1;
        self.object["metadata"]["resourceVersion"] = Value::String(next.to_string());
    }

    /// Answers a call on the object's own paths (`None` for any other path).
    pub fn handle(&mut self, method: &str, path: &str, content_type: &str, body: &Value) -> Option<(u16, Value)> {
        let name = self.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let own = format!("{INFDS}/{name}");
        let status_path = format!("{own}/status");
        if path == status_path && method == "PATCH" {
            let condition = body["metadata"]["resourceVersion"].as_str();
            if condition.is_some_and(|version| version != self.resource_version()) {
                return Some((409, conflict(&name)));
            }
            if self.object["status"] != body["status"] {
                self.object["status"] = body["status"].clone();
                self.bump();
            }
            return Some((200, self.object.clone()));
        }
        if path == format!("{own}/scale") && method == "PATCH" {
            // `/scale` writes `spec.replicas` only, and answers an autoscaling/v1 Scale.
            let before = self.object.clone();
            merge(&mut self.object, &json!({ "spec": { "replicas": body["spec"]["replicas"].clone() } }));
            if self.object != before {
                self.bump();
            }
            let scale = json!({
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": { "name": name, "resourceVersion": self.resource_version() },
                "spec": { "replicas": self.object["spec"]["replicas"].clone() },
                "status": { "replicas": self.object["status"]["replicas"].clone().as_i64().unwrap_or(0) },
            });
            return Some((200, scale));
        }
        if path != own {
            return None;
        }
        match method {
            "GET" => Some((200, self.object.clone())),
            "PATCH" if content_type.starts_with("application/merge-patch+json") => {
                let before = self.object.clone();
                merge(&mut self.object, body);
                if self.object != before {
                    self.bump();
                }
                Some((200, self.object.clone()))
            }
            "PATCH" if content_type.starts_with("application/json-patch+json") => {
                match json_patch(&self.object, body) {
                    Some(patched) => {
                        self.object = patched;
                        self.bump();
                        Some((200, self.object.clone()))
                    }
                    None => Some((422, status(422, "Invalid", "the JSON patch test failed"))),
                }
            }
            _ => None,
        }
    }
}

fn conflict(name: &str) -> Value {
    status(
        409,
        "Conflict",
        &format!("Operation cannot be fulfilled on inferencedeployments.infergate.dev \"{name}\": the object has been modified"),
    )
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// RFC 7386: null removes a key.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(target) = target {
                for (key, value) in fields {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The `test` and `remove` operations of RFC 6902 (all the operator sends); `None` when a test
/// fails or a path is missing.
fn json_patch(object: &Value, ops: &Value) -> Option<Value> {
    let mut patched = object.clone();
    for op in ops.as_array()? {
        let path = op["path"].as_str()?;
        match op["op"].as_str()? {
            "test" => {
                if patched.pointer(path)? != &op["value"] {
                    return None;
                }
            }
            "remove" => {
                let (parent, last) = path.rsplit_once('/')?;
                match patched.pointer_mut(parent)? {
                    Value::Array(items) => {
                        let index: usize = last.parse().ok()?;
                        (index < items.len()).then(|| items.remove(index))?;
                    }
                    Value::Object(fields) => {
                        fields.remove(last)?;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    Some(patched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{infd, spec};

    #[test]
    fn writes_bump_the_version_and_a_stale_conditional_status_write_conflicts() {
        let mut stored = StoredObject::new(&infd(spec()));
        assert_eq!(stored.resource_version(), "100");
        let status_path = format!("{INFDS}/chat/status");
        let write = json!({"metadata": {"resourceVersion": "100"}, "status": {"phase": "Pending"}});
        assert_eq!(stored.handle("PATCH", &status_path, "application/apply-patch+yaml", &write).unwrap().0, 200);
        assert_eq!(stored.resource_version(), "101");
        // The same write again, conditioned on the version it read before: a conflict.
        assert_eq!(stored.handle("PATCH", &status_path, "application/apply-patch+yaml", &write).unwrap().0, 409);
        let clear = json!({"metadata": {"annotations": {"infergate.dev/promote": null}}});
        stored.object["metadata"]["annotations"] = json!({"infergate.dev/promote": "true", "keep": "me"});
        stored.handle("PATCH", &format!("{INFDS}/chat"), "application/merge-patch+json", &clear).unwrap();
        assert_eq!(stored.object["metadata"]["annotations"], json!({"keep": "me"}));
        assert_eq!(stored.resource_version(), "102");
        stored.object["metadata"]["finalizers"] = json!(["a", "b"]);
        let remove = json!([{"op": "test", "path": "/metadata/finalizers/1", "value": "b"},
                            {"op": "remove", "path": "/metadata/finalizers/1"}]);
        let (code, _) =
            stored.handle("PATCH", &format!("{INFDS}/chat"), "application/json-patch+json", &remove).unwrap();
        assert_eq!((code, stored.object["metadata"]["finalizers"].clone()), (200, json!(["a"])));
        let (code, _) =
            stored.handle("PATCH", &format!("{INFDS}/chat"), "application/json-patch+json", &remove).unwrap();
        assert_eq!(code, 422, "the test op guards the index");
    }
}
