-- example-greeting: the smallest useful plugin, written for moongate to show APISIX's plugin
-- contract (Apache-2.0, part of moongate). It answers `GET /greeting`-style requests itself
-- when asked to, and otherwise tags the request on its way to the upstream.
--
--   plugins:
--     example-greeting: { greeting: "hello", answer: false }
--
-- What it shows: the module table (`version`, `priority`, `name`, `schema`), `check_schema`
-- through core.schema (which fills the schema's defaults into the conf), the `access` phase,
-- reading the request (`core.request.header`, `ctx.var`), changing it
-- (`core.request.set_header`), answering early (`return status, body`), and `header_filter`.

local core = require("apisix.core")

local NAME = "example-greeting"

local schema = {
    type = "object",
    properties = {
        greeting = { type = "string", minLength = 1, default = "hello" },
        -- true: answer from the gateway; false: pass the request on, tagged.
        answer = { type = "boolean", default = false },
        -- the request header whose value is greeted (e.g. a user name)
        name_header = { type = "string", default = "X-Name" },
    },
}

local plugin = {
    version = 0.1,
    priority = 100, -- low: runs after auth and traffic plugins in each phase
    name = NAME,
    schema = schema,
}

-- Called for every conf before it is accepted (Admin API, file reload). Returning false and a
-- message refuses the resource; core.schema.check words the message as APISIX does.
function plugin.check_schema(conf)
    return core.schema.check(plugin.schema, conf)
end

local function greeting_for(conf, ctx)
    local who = core.request.header(ctx, conf.name_header) or ctx.var.remote_addr
    return conf.greeting .. ", " .. who
end

function plugin.access(conf, ctx)
    local text = greeting_for(conf, ctx)
    if conf.answer then
        -- A table body is sent as JSON, followed by a newline.
        return 200, { greeting = text, route = ctx.var.route_id }
    end
    core.request.set_header(ctx, "X-Greeting", text)
    ctx.example_greeting = text
end

function plugin.header_filter(conf, ctx)
    if ctx.example_greeting then
        core.response.set_header("X-Greeted", "yes")
    end
end

return plugin
