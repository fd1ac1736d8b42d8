-- apisix.secret.vault: `$secret://vault/ID/PATH/FIELD` read from HashiCorp Vault's HTTP API.
--
-- The secret config (`/apisix/admin/secrets/vault/ID`) gives `uri` (Vault's address), `prefix`
-- (the secrets engine mount and path, e.g. `kv/apisix`), `token` (itself possibly an `$env://`
-- reference) and optionally `namespace` and `timeout` (seconds, default 5). A key `PATH/FIELD`
-- reads `GET {uri}/v1/{prefix}/{PATH}` and returns the response's `data.FIELD`.

local core, resty_http = require "apisix.core", require "resty.http"

local type, concat = type, table.concat
local sub, gmatch = string.sub, string.gmatch

local vault = {
    schema = {
        type = "object",
        required = { "uri", "prefix", "token" },
        properties = {
            token = { type = "string" },
            namespace = { type = "string" },
            prefix = { type = "string" },
            uri = core.schema["uri_def"],
        },
    },
}

-- `/v1/a//b/../c/./d` -> `/v1/a/c/d`: the request path never leaves the API root.
local function clean_path(path)
    local parts = {}
    for seg in gmatch(path, "[^/]+") do
        if seg == ".." then
            parts[#parts] = nil
        elseif seg ~= "." then
            parts[#parts + 1] = seg
        end
    end
    return "/" .. concat(parts, "/")
end

local function read(conf, path)
    local client = resty_http.new()
    client:set_timeout((conf.timeout or 5) * 1000)
    local request_headers = {
        ["X-Vault-Token"] = core.env.fetch_by_uri(conf.token) or conf.token,
        ["X-Vault-Namespace"] = conf.namespace,
    }
    local url = conf.uri .. clean_path("/v1/" .. conf.prefix .. "/" .. path)
    local res, why = client:request_uri(url, { method = "GET", headers = request_headers })
    if res == nil then
        return nil, why
    end
    return res.body
end

local function bad_key(what, key)
    return nil, what .. ", key: " .. key
end

vault.get = function(conf, key)
    core.log.info("fetching data from vault for key: " .. key)
    local slash = core.string.rfind_char(key, "/")
    if slash == nil then
        return bad_key("error key format", key)
    end
    local path, field = sub(key, 1, slash - 1), sub(key, slash + 1)
    if path == "" then
        return bad_key("can't find main key", key)
    end
    if field == "" then
        return bad_key("can't find sub key", key)
    end
    local body, why = read(conf, path)
    if body == nil then
        -- (sic: APISIX's wording, which users' log alerts may match)
        return nil, "failed to retrtive data from vault kv engine: " .. why
    end
    local doc = core.json.decode(body)
    if type(doc) == "table" and type(doc.data) == "table" then
        return doc.data[field]
    end
    return nil, "failed to decode result, res: " .. body
end

return vault
