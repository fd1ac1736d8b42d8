-- example-key-check: an auth plugin written for moongate to show APISIX's consumer contract
-- (Apache-2.0, part of moongate). A route enables it with `example-key-check: {}`; consumers
-- (or their credentials) carry the key that identifies them:
--
--   consumers:
--     - username: jack
--       plugins:
--         example-key-check: { key: "a-long-random-key" }
--
-- What it shows: `type = "auth"`, a `consumer_schema` (checked with
-- core.schema.TYPE_CONSUMER) whose `encrypt_fields` keeps the key encrypted at rest where the
-- config lives in a store, `apisix.consumer.find_consumer` and `attach_consumer` (after which
-- the consumer's own plugins join the route's), and 401 answers with `WWW-Authenticate`.

local core = require("apisix.core")
local consumers = require("apisix.consumer")

local NAME = "example-key-check"

-- What a route's conf may say.
local per_route = {
    type = "object",
    properties = {
        header = { type = "string", default = "X-Key" },
        -- remove the key before the request goes upstream
        hide_credentials = { type = "boolean", default = true },
    },
}

-- What a consumer's (or credential's) conf must say.
local per_consumer = {
    type = "object",
    properties = {
        key = { type = "string", minLength = 8 },
    },
    required = { "key" },
    encrypt_fields = { "key" },
}

local plugin = {
    version = 0.1,
    priority = 2400,
    type = "auth",
    name = NAME,
    schema = per_route,
    consumer_schema = per_consumer,
}

-- The second argument tells which side the conf comes from.
function plugin.check_schema(conf, kind)
    local against = per_route
    if kind == core.schema.TYPE_CONSUMER then
        against = per_consumer
    end
    return core.schema.check(against, conf)
end

local function refuse(message)
    core.response.set_header("WWW-Authenticate", 'Key realm="example"')
    return 401, { message = message }
end

function plugin.rewrite(conf, ctx)
    local header_name = conf.header
    local presented = core.request.header(ctx, header_name)
    if presented == nil then
        return refuse("Missing key in request")
    end
    -- Consumers are indexed by the value of their `key` field.
    local who, plugin_confs = consumers.find_consumer(NAME, "key", presented)
    if who == nil then
        core.log.warn("no consumer for the presented key")
        return refuse("Invalid key")
    end
    if conf.hide_credentials then
        core.request.set_header(ctx, header_name, nil)
    end
    consumers.attach_consumer(ctx, who, plugin_confs)
    core.log.info("example-key-check identified ", who.username)
end

return plugin
