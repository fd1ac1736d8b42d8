//! The block model: what one `=== TEST n` block of a `.t` file asks for, as the Perl stand-ins
//! hand it over (sections after filters and preprocessors), with typed views of the sections
//! the runner understands. Never runs anything.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A section's value after Test::Nginx's filters: text, a Perl `qr//`, or (from `eval`) a list.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Regex {
        pattern: String,
        flags: String,
    },
    List(Vec<Value>),
    /// Something the runner cannot use (a Perl code or hash reference): the block is skipped.
    Unsupported(String),
}

impl Value {
    fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Number(n) => Value::Text(n.to_string()),
            serde_json::Value::Bool(b) => Value::Text(if *b { "1".into() } else { "".into() }),
            serde_json::Value::Null => Value::Text(String::new()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => {
                if let Some(p) = o.get("regex").and_then(|p| p.as_str()) {
                    let flags = o.get("flags").and_then(|f| f.as_str()).unwrap_or("");
                    Value::Regex {
                        pattern: p.to_string(),
                        flags: flags.to_string(),
                    }
                } else {
                    let what = o
                        .get("unsupported")
                        .and_then(|u| u.as_str())
                        .unwrap_or("an object");
                    Value::Unsupported(what.to_string())
                }
            }
        }
    }

    /// The text of a plain section; `None` for lists and regexes.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A list's items, or the value itself as the only item.
    pub fn items(&self) -> Vec<&Value> {
        match self {
            Value::List(items) => items.iter().collect(),
            other => vec![other],
        }
    }

    pub fn is_unsupported(&self) -> Option<&str> {
        match self {
            Value::Unsupported(s) => Some(s),
            Value::List(items) => items.iter().find_map(|i| i.is_unsupported()),
            _ => None,
        }
    }
}

/// File-level settings the prologue made (`repeat_each`, `log_level`, `plan skip_all` …).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Settings {
    #[serde(default = "one")]
    pub repeat_each: u32,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default = "one")]
    pub workers: u32,
    #[serde(default)]
    pub skip_all: Option<String>,
    /// The file said `use t::APISIX`: APISIX's conventions apply (its `t/lib` and upstreams).
    #[serde(default)]
    pub apisix: bool,
    /// `$ENV{TEST_NGINX_USE_HUP}` was true: nginx is reloaded between blocks, not restarted, so
    /// shared dictionaries keep their content.
    #[serde(default)]
    pub use_hup: bool,
}

fn one() -> u32 {
    1
}

/// One block, its sections in file order.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1-based position in the file, as `TEST n` counts.
    pub seq: usize,
    /// The header text after `===`, e.g. `TEST 3: add plugin`.
    pub name: String,
    pub line: usize,
    pub sections: BTreeMap<String, Value>,
}

impl Block {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.sections.get(name)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.text())
    }

    pub fn has(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }
}

/// What the Perl side wrote for one file.
#[derive(Debug, Clone)]
pub struct File {
    pub settings: Settings,
    pub blocks: Vec<Block>,
    /// The environment the Perl prologue ended with (`BEGIN { $ENV{X} = ... }`).
    pub env: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawBlock {
    seq: usize,
    name: String,
    #[serde(default)]
    line: usize,
    sections: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawFile {
    settings: Settings,
    blocks: Vec<RawBlock>,
    /// Values the prologue left undefined come as `null` and are dropped.
    #[serde(default)]
    env: std::collections::BTreeMap<String, Option<String>>,
}

impl File {
    /// Reads the JSON document the stand-ins write.
    pub fn from_json(text: &str) -> Result<File, serde_json::Error> {
        let raw: RawFile = serde_json::from_str(text)?;
        let blocks = raw
            .blocks
            .into_iter()
            .map(|b| Block {
                seq: b.seq,
                name: b.name,
                line: b.line,
                sections: b
                    .sections
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            })
            .collect();
        Ok(File {
            settings: raw.settings,
            blocks,
            env: raw
                .env
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
        })
    }

    /// The blocks to run, after `ONLY`, `LAST` and `SKIP` (skipped blocks stay, marked).
    pub fn selected(&self) -> Vec<&Block> {
        if let Some(only) = self.blocks.iter().find(|b| b.has("ONLY")) {
            return vec![only];
        }
        let mut out = Vec::new();
        for b in &self.blocks {
            out.push(b);
            if b.has("LAST") {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_alone_and_last_stops_the_file() {
        let json = r#"{"settings":{"repeat_each":1},"blocks":[
            {"seq":1,"name":"TEST 1","sections":{}},
            {"seq":2,"name":"TEST 2","sections":{"LAST":""}},
            {"seq":3,"name":"TEST 3","sections":{}}]}"#;
        let f = File::from_json(json).unwrap();
        assert_eq!(
            f.selected().iter().map(|b| b.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        let json = json.replace(
            r#""name":"TEST 3","sections":{}"#,
            r#""name":"TEST 3","sections":{"ONLY":""}"#,
        );
        let f = File::from_json(&json).unwrap();
        assert_eq!(f.selected().iter().map(|b| b.seq).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn eval_lists_and_regexes_keep_their_shape() {
        let json = r#"{"settings":{},"blocks":[{"seq":1,"name":"T","sections":{
            "response_body":["a",{"regex":"b+","flags":"i"}],"error_code":200}}]}"#;
        let f = File::from_json(json).unwrap();
        let b = &f.blocks[0];
        assert_eq!(b.text("error_code"), Some("200"));
        assert_eq!(
            b.get("response_body").unwrap().items()[1],
            &Value::Regex {
                pattern: "b+".into(),
                flags: "i".into()
            }
        );
    }
}
