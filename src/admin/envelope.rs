//! The JSON answers of the Admin API, in APISIX v3's shapes.

use serde_json::{Value, json};

use crate::config::store::{Item, StoreError};

/// One answer: status, body (JSON unless said otherwise) and the headers it adds to the ones
/// every Admin API answer carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Answer {
    /// A JSON answer, followed by a newline as APISIX's `core.response.exit` writes one.
    pub fn json(status: u16, v: Value) -> Answer {
        let mut body = v.to_string();
        body.push('\n');
        Answer::text(status, body)
    }

    /// An answer whose body is given as it is.
    pub fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// `{"error_msg": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Answer {
        Answer::json(status, json!({ "error_msg": msg.into() }))
    }

    /// A missing key, as etcd's v2 answer APISIX passes through.
    pub fn not_found() -> Answer {
        Answer::json(404, json!({"message": "Key not found"}))
    }

    /// A store failure: 503 when the store is away, 409 on a lost race, 500 otherwise.
    pub fn store(e: &StoreError) -> Answer {
        let status = match e {
            StoreError::Unavailable(_) => 503,
            StoreError::Conflict(_) => 409,
            StoreError::Compacted(_) | StoreError::Failed(_) => 500,
        };
        Answer::error(status, e.to_string())
    }
}

/// The stored value of an item as JSON (a value that is not JSON is shown as a string).
pub fn value_of(item: &Item) -> Value {
    serde_json::from_slice(&item.value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&item.value).into_owned()))
}

/// `{"key", "value", "createdIndex", "modifiedIndex"}`: one item as `GET` shows it.
pub fn node(item: &Item, value: Value) -> Value {
    json!({
        "key": item.key,
        "value": value,
        "createdIndex": item.create_revision,
        "modifiedIndex": item.mod_revision,
    })
}

/// `{"key", "value"}`: what `PUT`, `POST` and `PATCH` answer.
pub fn written(item: &Item, value: Value) -> Value {
    json!({ "key": item.key, "value": value })
}

/// The same answer in APISIX 2's envelope (`deployment.admin.admin_api_version: default`):
/// `{"action": …, "node": …}`, a list as a directory node with `nodes`.
pub fn to_v2(method: &http::Method, dir: &str, answer: Answer) -> Answer {
    if answer.status >= 300 {
        return answer;
    }
    let Ok(v) = serde_json::from_str::<Value>(&answer.body) else {
        return answer;
    };
    let action = match *method {
        http::Method::PUT => "set",
        http::Method::POST => "create",
        http::Method::PATCH => "compareAndSwap",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let out = if let Some(list) = v.get("list") {
        json!({"action": action, "node": {"key": dir, "dir": true, "nodes": list}})
    } else if *method == http::Method::DELETE {
        json!({"action": action, "deleted": v.get("deleted"), "key": v.get("key"), "node": {}})
    } else {
        let node = json!({"key": v.get("key"), "value": v.get("value")});
        json!({"action": action, "node": node})
    };
    Answer {
        headers: answer.headers,
        ..Answer::json(answer.status, out)
    }
}
