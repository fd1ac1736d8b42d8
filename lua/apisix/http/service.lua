-- apisix.http.service: the services of the running config, read-only. `get(id)` gives the item
-- (`{key, value, modifiedIndex}`) or nil; `services()` every item and the config version.
-- Services are merged into their routes by the Rust config plane; plugins read them here for
-- names and labels (datadog, opa, prometheus).

local docs = require("moongate.config_doc")

local service = { version = 0.2 }

function service.get(id)
    return docs.get("services", id)
end

function service.services()
    return docs.items("services")
end

-- APISIX's filter for GraphQL cost keys; moongate has no GraphQL cost decoration.
function service.is_graphql_cost_decoration_key()
    return false
end

function service.init_worker() end

return service
