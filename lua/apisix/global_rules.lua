-- apisix.global_rules: the global rules of the running config, read-only. `global_rules()`
-- gives every item (`{key, value, modifiedIndex}`) and the config version. The rules' plugins
-- run through the Rust host before the route's; this is only for plugins that look at them
-- (prometheus, ai).

local docs = require("moongate.config_doc")

local rules = {}

function rules.global_rules()
    return docs.items("global_rules")
end

-- The config version the rules were last seen at (APISIX keeps the previous etcd index).
function rules.get_pre_index()
    local _, version = docs.current()
    return version
end

function rules.init_worker() end

return rules
