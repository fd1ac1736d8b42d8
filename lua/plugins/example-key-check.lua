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
-- the consumer's own plugins join the route's), and `realm`/401 answers as APISIX's auth
-- plugins give them.

local core = require("apisix.core")
local consumer = require("apisix.consumer")

local NAME = "example-key-check"

local schema = {
    type = "object",
    properties = {
        header = { type = "string", default = "X-Key" },
        hide_credentials = { type = "boolean", default = true },
    },
}

local consumer_schema = {
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
    schema = schema,
    consumer_schema = consumer_schema,
}

function plugin.check_schema(conf, schema_type)
    if schema_type == core.schema.TYPE_CONSUMER then
        return core.schema.check(consumer_schema, conf)
    end
    return core.schema.check(schema, conf)
end

function plugin.rewrite(conf, ctx)
    local presented = core.request.header(ctx, conf.header)
    if not presented then
        core.response.set_header("WWW-Authenticate", 'Key realm="example"')
        return 401, { message = "Missing key in request" }
    end
    local who, consumer_conf = consumer.find_consumer(NAME, "key", presented)
    if not who then
        core.log.warn("no consumer for the presented key")
        return 401, { message = "Invalid key" }
    end
    if conf.hide_credentials then
        core.request.set_header(ctx, conf.header, nil)
    end
    consumer.attach_consumer(ctx, who, consumer_conf)
    core.log.info("example-key-check identified ", who.username)
end

return plugin
