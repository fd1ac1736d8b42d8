//! The APISIX plugin contract, as the host checks it when plugins load.
//!
//! A plugin is a module `apisix.plugins.NAME` returning a table with `version` (number),
//! `priority` (integer), `name`, `schema` (table) and phase functions. Loading requires it,
//! checks those fields with APISIX's wording, injects the `_meta` property into the schema (the
//! per-plugin options every plugin accepts: `disable`, `priority`, `filter`, `error_response`,
//! `pre_function`; the schema is `apisix.schema_def`'s, the one place it is defined), records which phases it implements, and runs its `init()`. `check_conf` runs
//! the plugin's `check_schema(conf, schema_type)` on a conf decoded the way APISIX decodes
//! config (arrays marked with `cjson.array_mt`, `null` as `cjson.null`), which fills defaults
//! into the conf table the plugin will later receive.
//!
//! The phase runner that calls the phases is still to come; this module never touches requests.

use mlua::{Function, Lua, Table, Value};

use super::vm::LuaVm;

/// The phases APISIX calls, in request order.
pub const PHASES: [&str; 9] = [
    "rewrite",
    "access",
    "balancer",
    "before_proxy",
    "header_filter",
    "body_filter",
    "delayed_body_filter",
    "log",
    "rewrite_in_consumer",
];

/// A plugin that loaded and passed the contract checks.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    pub name: String,
    pub priority: i64,
    pub version: f64,
    /// The phases it implements, a subset of [`PHASES`] in that order.
    pub phases: Vec<&'static str>,
    /// `type = "auth"` plugins identify consumers.
    pub is_auth: bool,
}

/// Gives a plugin's schema the `_meta` property every plugin accepts, from
/// `apisix.schema_def.plugin_injected_schema`, and marks it with that table's `$comment` so a
/// schema is injected once. As in APISIX, a schema without `properties` gets them, and a plugin
/// that declares `_meta` itself is refused.
const INJECT_META: &str = r#"
local schema, name = ...
local injected = require("apisix.schema_def").plugin_injected_schema
if schema["$comment"] == injected["$comment"] then return nil end
if schema.properties == nil then schema.properties = {} end
if type(schema.properties) ~= "table" then
    return "invalid plugin [" .. name .. "] schema field"
end
if schema.properties._meta ~= nil then
    return "invalid plugin [" .. name .. "]: found forbidden '_meta' field in the schema"
end
schema.properties._meta = injected._meta
schema["$comment"] = injected["$comment"]
return nil
"#;

fn decode_json(lua: &Lua, json: &str) -> mlua::Result<Value> {
    // APISIX decodes config with arrays marked, so empty arrays stay arrays when re-encoded.
    let decode: Function = lua
        .load("local cjson = require('cjson.safe').new() cjson.decode_array_with_array_mt(true) return cjson.decode")
        .eval()?;
    let (v, err): (Value, Option<String>) = decode.call(json)?;
    match err {
        Some(e) => Err(mlua::Error::runtime(e)),
        None => Ok(v),
    }
}

/// Loads one plugin, checking the contract. Errors use APISIX's wording.
pub fn load(vm: &LuaVm, name: &str) -> Result<LoadedPlugin, String> {
    let lua = vm.lua();
    let require: Function = lua.globals().get("require").map_err(|e| e.to_string())?;
    let module: Value = require
        .call(format!("apisix.plugins.{name}"))
        .map_err(|e| format!("failed to load plugin [{name}] err: {e}"))?;
    let Value::Table(m) = module else {
        return Err(format!(
            "failed to load plugin [{name}] err: module did not return a table"
        ));
    };
    let get = |k: &str| m.get::<Value>(k).unwrap_or(Value::Nil);
    let priority = match get("priority") {
        Value::Integer(p) => p,
        Value::Number(p) if p.fract() == 0.0 => p as i64,
        Value::Nil => return Err(format!("invalid plugin [{name}], missing field: priority")),
        other => {
            return Err(format!(
                "invalid plugin [{name}], priority must be an integer, got {}",
                other.type_name()
            ));
        }
    };
    let version = match get("version") {
        Value::Integer(v) => v as f64,
        Value::Number(v) => v,
        Value::Nil => return Err(format!("invalid plugin [{name}], missing field: version")),
        other => {
            return Err(format!(
                "invalid plugin [{name}], version must be a number, got {}",
                other.type_name()
            ));
        }
    };
    let schema = match get("schema") {
        Value::Table(t) => t,
        _ => return Err(format!("invalid plugin [{name}], missing field: schema")),
    };
    match get("name") {
        Value::String(s) if s.to_string_lossy() != name => {
            return Err(format!(
                "invalid plugin [{name}], its name field says {:?}",
                s.to_string_lossy()
            ));
        }
        Value::String(_) => {}
        _ => m.set("name", name).map_err(|e| e.to_string())?,
    }
    let refused: Option<String> = lua
        .load(INJECT_META)
        .set_name("=moongate/inject_meta")
        .call((schema, name))
        .map_err(|e| format!("failed to load plugin [{name}] err: {e}"))?;
    if let Some(e) = refused {
        return Err(e);
    }
    let phases: Vec<&'static str> = PHASES
        .iter()
        .copied()
        .filter(|p| matches!(get(p), Value::Function(_)))
        .collect();
    let is_auth = matches!(get("type"), Value::String(s) if s.to_string_lossy() == "auth");
    if let Value::Function(init) = get("init") {
        init.call::<()>(())
            .map_err(|e| format!("failed to init plugin [{name}] err: {e}"))?;
    }
    // As APISIX's loader does: a plugin that can serve as a workflow action (limit-count)
    // registers itself with `apisix.plugins.workflow` once it is loaded.
    if let Value::Function(register) = get("workflow_handler") {
        register
            .call::<()>(())
            .map_err(|e| format!("failed to load plugin [{name}] err: workflow_handler: {e}"))?;
    }
    Ok(LoadedPlugin {
        name: name.to_string(),
        priority,
        version,
        phases,
        is_auth,
    })
}

/// Decodes `conf` into a Lua table and runs the plugin's `check_schema(conf, schema_type)`
/// (`schema_type` 1 = consumer, 2 = metadata, as `core.schema.TYPE_*`). Returns the checked
/// table, with whatever defaults the check filled in.
pub fn check_conf(
    vm: &LuaVm,
    name: &str,
    conf: &serde_json::Value,
    schema_type: Option<i64>,
) -> Result<Table, String> {
    let lua = vm.lua();
    let text = serde_json::to_string(conf).map_err(|e| e.to_string())?;
    let Value::Table(t) = decode_json(lua, &text).map_err(|e| e.to_string())? else {
        return Err(format!(
            "failed to check the configuration of plugin {name} err: conf must be an object"
        ));
    };
    let require: Function = lua.globals().get("require").map_err(|e| e.to_string())?;
    let module: Table = require
        .call(format!("apisix.plugins.{name}"))
        .map_err(|e| e.to_string())?;
    let Ok(check) = module.get::<Function>("check_schema") else {
        return Ok(t);
    };
    let (ok, err): (Value, Option<String>) = check
        .call((t.clone(), schema_type))
        .map_err(|e| e.to_string())?;
    match ok {
        Value::Boolean(true) => Ok(t),
        // A plugin switched off by `_meta.disable` never runs, so a check that fails for
        // reasons of this node (a missing cache zone, say) must not reject the resource: APISIX
        // accepts it with a warning.
        _ if meta_disabled(&t) => {
            log::warn!(
                "failed to check the configuration of disabled plugin {name}, accepting it anyway: {}",
                err.unwrap_or_default()
            );
            Ok(t)
        }
        _ => Err(format!(
            "failed to check the configuration of plugin {name} err: {}",
            err.unwrap_or_default()
        )),
    }
}

/// Runs `moongate.admin_checks.check(kind, stage, conf, id)` on a decoded copy of `conf`:
/// `Ok(None)` when it passes, `Ok(Some(message))` with the Admin API's error when it does not,
/// `Err` when the check itself could not run.
pub fn check_resource(
    vm: &LuaVm,
    kind: &str,
    stage: &str,
    id: &str,
    conf: &serde_json::Value,
) -> Result<Option<String>, String> {
    let lua = vm.lua();
    let text = serde_json::to_string(conf).map_err(|e| e.to_string())?;
    let decoded = decode_json(lua, &text).map_err(|e| e.to_string())?;
    let require: Function = lua.globals().get("require").map_err(|e| e.to_string())?;
    let module: Table = require
        .call("moongate.admin_checks")
        .map_err(|e| format!("moongate.admin_checks: {e}"))?;
    let check: Function = module.get("check").map_err(|e| e.to_string())?;
    check
        .call::<Option<String>>((kind, stage, decoded, id))
        .map_err(|e| format!("moongate.admin_checks: {e}"))
}

/// Calls `moongate.admin_checks[op](name, conf)`: `Ok(text)` or `Err(message)`.
pub fn admin_call(
    vm: &LuaVm,
    op: &str,
    name: &str,
    conf: &serde_json::Value,
) -> Result<String, String> {
    let lua = vm.lua();
    let text = serde_json::to_string(conf).map_err(|e| e.to_string())?;
    let decoded = decode_json(lua, &text).map_err(|e| e.to_string())?;
    let require: Function = lua.globals().get("require").map_err(|e| e.to_string())?;
    let module: Table = require
        .call("moongate.admin_checks")
        .map_err(|e| format!("moongate.admin_checks: {e}"))?;
    let f: Function = module
        .get(op)
        .map_err(|e| format!("moongate.admin_checks.{op}: {e}"))?;
    let (out, err): (Option<String>, Option<String>) = f
        .call((name, decoded))
        .map_err(|e| format!("moongate.admin_checks.{op}: {e}"))?;
    match (out, err) {
        (Some(t), _) => Ok(t),
        (None, e) => Err(e.unwrap_or_else(|| format!("moongate.admin_checks.{op} failed"))),
    }
}

/// Which way [`seal_conf`] transforms a plugin's `encrypt_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    Encrypt,
    Decrypt,
}

impl Seal {
    fn op(self) -> &'static str {
        match self {
            Seal::Encrypt => "encrypt",
            Seal::Decrypt => "decrypt",
        }
    }
}

/// Encrypts or decrypts the `encrypt_fields` of plugin `name` in the Lua table `conf`, in
/// place (`moongate.encrypt_fields`: nothing happens when the node keeps confs in clear).
/// Returns whether a value changed.
pub fn seal_table(
    vm: &LuaVm,
    name: &str,
    conf: &Table,
    schema_type: Option<i64>,
    seal: Seal,
) -> Result<bool, String> {
    let lua = vm.lua();
    let apply: Function = lua
        .load("return require('moongate.encrypt_fields').apply")
        .eval()
        .map_err(|e| e.to_string())?;
    apply
        .call((name, conf.clone(), schema_type, seal.op()))
        .map_err(|e| e.to_string())
}

/// [`seal_table`] over a JSON conf: the transformed conf as JSON text, or `None` when nothing
/// changed (the caller keeps its own value, untouched by a round trip through Lua).
pub fn seal_conf(
    vm: &LuaVm,
    name: &str,
    conf: &serde_json::Value,
    schema_type: Option<i64>,
    seal: Seal,
) -> Result<Option<String>, String> {
    let lua = vm.lua();
    let text = serde_json::to_string(conf).map_err(|e| e.to_string())?;
    let Value::Table(t) = decode_json(lua, &text).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if !seal_table(vm, name, &t, schema_type, seal)? {
        return Ok(None);
    }
    let encode: Function = lua
        .load("local cjson = require('cjson.safe').new() cjson.encode_escape_forward_slash(false) return cjson.encode")
        .eval()
        .map_err(|e| e.to_string())?;
    let (out, err): (Option<String>, Option<String>) = encode.call(t).map_err(|e| e.to_string())?;
    out.map(Some).ok_or_else(|| {
        format!(
            "cannot encode the conf of plugin {name}: {}",
            err.unwrap_or_default()
        )
    })
}

/// `conf._meta.disable == true`.
fn meta_disabled(conf: &Table) -> bool {
    match conf.get::<Value>("_meta") {
        Ok(Value::Table(meta)) => matches!(meta.get::<Value>("disable"), Ok(Value::Boolean(true))),
        _ => false,
    }
}

/// The plugin's schema as JSON: `schema`, or `consumer_schema` (`schema_type` 1) or
/// `metadata_schema` (2) when asked, as `GET /apisix/admin/plugins/{name}` shows it.
pub fn schema_json(vm: &LuaVm, name: &str, schema_type: Option<i64>) -> Result<String, String> {
    let lua = vm.lua();
    let require: Function = lua.globals().get("require").map_err(|e| e.to_string())?;
    let module: Table = require
        .call(format!("apisix.plugins.{name}"))
        .map_err(|e| e.to_string())?;
    let field = match schema_type {
        Some(1) => "consumer_schema",
        Some(2) => "metadata_schema",
        _ => "schema",
    };
    let schema: Value = module.get(field).map_err(|e| e.to_string())?;
    if schema.is_nil() {
        return Ok("{}".into());
    }
    let encode: Function = lua
        .load("return require('cjson.safe').encode")
        .eval()
        .map_err(|e| e.to_string())?;
    let (text, err): (Option<String>, Option<String>) =
        encode.call(schema).map_err(|e| e.to_string())?;
    text.ok_or_else(|| {
        format!(
            "cannot encode the schema of plugin {name}: {}",
            err.unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::lua::vm::VmOptions;

    fn vm_with_plugins(files: &[(&str, &str)]) -> (LuaVm, PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("moongate-plugins-{}-{n}", std::process::id()));
        let plugins = dir.join("lua/plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for (name, src) in files {
            std::fs::write(plugins.join(format!("{name}.lua")), src).unwrap();
        }
        (LuaVm::new(&VmOptions::for_prefix(&dir)).unwrap(), dir)
    }

    const GOOD: &str = r#"
        local _M = { version = 0.1, priority = 2500, name = "fixture-auth", type = "auth",
            schema = { type = "object", properties = { header = { type = "string", default = "apikey" } } } }
        init_count = (init_count or 0) + 1
        function _M.init() initialised = true end
        function _M.check_schema(conf, schema_type)
            if conf.header == nil then conf.header = "apikey" end
            if type(conf.header) ~= "string" then
                return false, 'property "header" validation failed: wrong type: expected string, got ' .. type(conf.header)
            end
            conf.seen_type = schema_type
            return true
        end
        function _M.rewrite(conf, ctx) end
        function _M.log(conf, ctx) end
        return _M
    "#;

    #[test]
    fn a_plugin_loads_with_its_contract_checked_and_meta_injected() {
        let (vm, dir) = vm_with_plugins(&[("fixture-auth", GOOD)]);
        let p = load(&vm, "fixture-auth").unwrap();
        assert_eq!((p.priority, p.version, p.is_auth), (2500, 0.1, true));
        assert_eq!(p.phases, vec!["rewrite", "log"]);
        let (initialised, meta): (bool, bool) = vm
            .lua()
            .load("return initialised, require('apisix.plugins.fixture-auth').schema.properties._meta.properties.disable.type == 'boolean'")
            .eval()
            .unwrap();
        assert!(initialised && meta);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn check_conf_fills_defaults_and_reports_errors_in_apisix_words() {
        let (vm, dir) = vm_with_plugins(&[("fixture-auth", GOOD)]);
        let t = check_conf(
            &vm,
            "fixture-auth",
            &serde_json::json!({"list": []}),
            Some(1),
        )
        .unwrap();
        assert_eq!(t.get::<String>("header").unwrap(), "apikey");
        assert_eq!(t.get::<i64>("seen_type").unwrap(), 1);
        let is_array: bool = vm
            .lua()
            .load("local t = ... return getmetatable(t.list) == require('cjson').array_mt")
            .call(t)
            .unwrap();
        assert!(
            is_array,
            "arrays decode with cjson.array_mt, as APISIX decodes config"
        );
        let err =
            check_conf(&vm, "fixture-auth", &serde_json::json!({"header": 5}), None).unwrap_err();
        assert_eq!(
            err,
            "failed to check the configuration of plugin fixture-auth err: property \"header\" validation failed: wrong type: expected string, got number"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    const SCHEMA_CHECKED: &str = r#"
        local core_schema = require("apisix.core.schema")
        local _M = { version = 0.1, priority = 1, name = "fixture-schema",
            schema = { type = "object", properties = {
                header = { type = "string", default = "apikey" },
                codes = { type = "array", items = { type = "integer" }, default = { 200 } } } } }
        function _M.check_schema(conf) return core_schema.check(_M.schema, conf) end
        return _M
    "#;

    #[test]
    fn check_schema_through_core_schema_fills_defaults_and_checks_meta() {
        let (vm, dir) = vm_with_plugins(&[
            ("fixture-schema", SCHEMA_CHECKED),
            (
                "declares-meta",
                "return { version = 0.1, priority = 1, schema = { properties = { _meta = {} } } }",
            ),
            (
                "no-properties",
                "return { version = 0.1, priority = 1, schema = {} }",
            ),
        ]);
        load(&vm, "fixture-schema").unwrap();
        let t = check_conf(&vm, "fixture-schema", &serde_json::json!({}), None).unwrap();
        assert_eq!(t.get::<String>("header").unwrap(), "apikey");
        assert_eq!(t.get::<Table>("codes").unwrap().get::<i64>(1).unwrap(), 200);
        let ok = serde_json::json!({"_meta": {"disable": true, "priority": 5, "filter": [["arg_a", "==", "1"]]}});
        check_conf(&vm, "fixture-schema", &ok, None).unwrap();
        let err = check_conf(
            &vm,
            "fixture-schema",
            &serde_json::json!({"_meta": {"priority": "high"}}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "failed to check the configuration of plugin fixture-schema err: property \"_meta\" validation failed: property \"priority\" validation failed: wrong type: expected integer, got string"
        );
        // a plugin disabled by _meta is accepted even when its check fails, as in APISIX
        let t = check_conf(
            &vm,
            "fixture-schema",
            &serde_json::json!({"header": 1, "_meta": {"disable": true}}),
            None,
        )
        .unwrap();
        assert_eq!(t.get::<i64>("header").unwrap(), 1);
        let err = check_conf(
            &vm,
            "fixture-schema",
            &serde_json::json!({"_meta": {"prefunction": "x"}}),
            None,
        )
        .unwrap_err();
        assert!(
            err.ends_with("additional properties forbidden, found prefunction"),
            "{err}"
        );
        assert_eq!(
            load(&vm, "declares-meta").unwrap_err(),
            "invalid plugin [declares-meta]: found forbidden '_meta' field in the schema"
        );
        load(&vm, "no-properties").unwrap();
        let injected: bool = vm
            .lua()
            .load("local s = require('apisix.plugins.no-properties').schema return s.properties._meta == require('apisix.schema_def').plugin_injected_schema._meta and s['$comment'] ~= nil")
            .eval()
            .unwrap();
        assert!(
            injected,
            "a schema without properties gets them, with _meta"
        );
        // loading again (the workers do) does not inject twice nor refuse the marked schema
        load(&vm, "fixture-schema").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broken_plugins_are_refused_naming_the_problem() {
        let (vm, dir) = vm_with_plugins(&[
            ("no-priority", "return { version = 0.1, schema = {} }"),
            ("no-schema", "return { version = 0.1, priority = 1 }"),
            ("syntax", "return {"),
        ]);
        assert_eq!(
            load(&vm, "no-priority").unwrap_err(),
            "invalid plugin [no-priority], missing field: priority"
        );
        assert_eq!(
            load(&vm, "no-schema").unwrap_err(),
            "invalid plugin [no-schema], missing field: schema"
        );
        assert!(
            load(&vm, "syntax")
                .unwrap_err()
                .starts_with("failed to load plugin [syntax] err: ")
        );
        assert!(
            load(&vm, "absent")
                .unwrap_err()
                .contains("module 'apisix.plugins.absent' not found")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
