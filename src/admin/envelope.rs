//! The JSON answers of the Admin API, in APISIX v3's shapes.

use serde_json::{Value, json};

use crate::config::store::{Item, StoreError};

/// One answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// A JSON answer, followed by a newline as APISIX's `core.response.exit` writes one.
    pub fn json(status: u16, v: Value) -> Answer {
        let mut body = v.to_string();
        body.push('\n');
        Answer { status, body }
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
