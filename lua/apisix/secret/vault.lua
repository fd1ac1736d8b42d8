-- apisix.secret.vault: `$secret://vault/ID/PATH/FIELD` read from HashiCorp Vault's HTTP API.
--
-- The secret config (`/apisix/admin/secrets/vault/ID`) gives `uri` (Vault's address), `prefix`
-- (the secrets engine mount and path, e.g. `kv/apisix`), `token` (itself possibly an `$env://`
-- reference) and optionally `namespace` and `timeout` (seconds, default 5). A key `PATH/FIELD`
-- reads `GET {uri}/v1/{prefix}/{PATH}` and returns the response's `data.FIELD`.

local core = require("apisix.core")
local http = require("resty.http")

local type, concat = type, table.concat
local sub, gmatch = string.sub, string.gmatch

local _M = {
    schema = {
        type = "object",
        properties = {
            uri = core.schema.uri_def,
            prefix = { type = "string" },
            token = { type = "string" },
            namespace = { type = "string" },
        },
        required = { "uri", "prefix", "token" },
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
    local httpc = http.new()
    httpc:set_timeout((conf.timeout or 5) * 1000)
    local token = core.env.fetch_by_uri(conf.token) or conf.token
    local headers = { ["X-Vault-Token"] = token }
    if conf.namespace then
        headers["X-Vault-Namespace"] = conf.namespace
    end
    local res, err = httpc:request_uri(conf.uri .. clean_path("/v1/" .. conf.prefix .. "/" .. path), {
        method = "GET",
        headers = headers,
    })
    if not res then
        return nil, err
    end
    return res.body
end

function _M.get(conf, key)
    core.log.info("fetching data from vault for key: ", key)
    local slash = core.string.rfind_char(key, "/")
    if not slash then
        return nil, "error key format, key: " .. key
    end
    local path, field = sub(key, 1, slash - 1), sub(key, slash + 1)
    if path == "" then
        return nil, "can't find main key, key: " .. key
    end
    if field == "" then
        return nil, "can't find sub key, key: " .. key
    end
    local body, err = read(conf, path)
    if not body then
        -- (sic: APISIX's wording, which users' log alerts may match)
        return nil, "failed to retrtive data from vault kv engine: " .. err
    end
    local doc = core.json.decode(body)
    if type(doc) ~= "table" or type(doc.data) ~= "table" then
        return nil, "failed to decode result, res: " .. body
    end
    return doc.data[field]
end

return _M
