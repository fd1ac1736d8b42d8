-- core.env: environment variables, and `$ENV://NAME[/key]` references (the value, or the
-- field `key` of the JSON value).

local json = require("apisix.core.json")
local log = require("apisix.core.log")
local os, type, sub, find, upper = os, type, string.sub, string.find, string.upper

local PREFIX = "$ENV://"

local _M = { PREFIX = PREFIX }

-- APISIX snapshots the environment at start (nginx clears it for workers); moongate's workers
-- keep the process environment, so `init` has nothing to copy.
function _M.init() end

function _M.get(name)
    return os.getenv(name)
end

local function parse(uri)
    if type(uri) ~= "string" then
        return nil, "error env_uri type: " .. type(uri)
    end
    if sub(upper(uri), 1, #PREFIX) ~= PREFIX then
        return nil, "error env_uri prefix: " .. uri
    end
    local path = sub(uri, #PREFIX + 1)
    local slash = find(path, "/", 1, true)
    if not slash then
        return { key = path, sub_key = "" }
    end
    return { key = sub(path, 1, slash - 1), sub_key = sub(path, slash + 1) }
end

function _M.fetch_by_uri(uri)
    log.info("fetching data from env uri: ", uri)
    local ref, err = parse(uri)
    if not ref then
        return nil, err
    end
    local value = _M.get(ref.key)
    if value and ref.sub_key ~= "" then
        local t, derr = json.decode(value)
        if type(t) ~= "table" then
            return nil, "decode failed, err: " .. (derr or "") .. ", value: " .. value
        end
        return t[ref.sub_key]
    end
    return value
end

return _M
