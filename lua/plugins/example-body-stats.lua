-- example-body-stats: a response-side plugin written for moongate to show the later phases of
-- APISIX's plugin contract (Apache-2.0, part of moongate). For bodies small enough to hold it
-- counts bytes and lines, appends an optional footer, and logs one line per request.
--
--   plugins:
--     example-body-stats: { max_hold: 65536 }
--
-- What it shows: `body_filter` with core.response.hold_body_chunk (the whole body at its end,
-- chunks held back meanwhile), rewriting the body (`ngx.arg[1]`), dropping the headers that
-- described the old body, the `log` phase (after the client got its answer), and `core.log`
-- with JSON encoded only when the line is written.

local core = require("apisix.core")

local NAME = "example-body-stats"

local schema = {
    type = "object",
    properties = {
        -- bodies up to this size are held and annotated; bigger ones stream untouched
        max_hold = { type = "integer", minimum = 1, default = 65536 },
        -- text added at the end of an annotated body ("" adds nothing)
        footer = { type = "string", default = "" },
    },
}

local plugin = {
    version = 0.1,
    priority = 50,
    name = NAME,
    schema = schema,
}

function plugin.check_schema(conf)
    return core.schema.check(plugin.schema, conf)
end

function plugin.header_filter(conf, ctx)
    local declared = tonumber(ngx.header["Content-Length"])
    ctx.example_body_stats = { hold = declared == nil or declared <= conf.max_hold }
    if ctx.example_body_stats.hold and conf.footer ~= "" then
        -- The body will change: its length and validators no longer hold.
        core.response.clear_header_as_body_modified()
    end
end

function plugin.body_filter(conf, ctx)
    local state = ctx.example_body_stats
    if not (state and state.hold) then
        return
    end
    local body = core.response.hold_body_chunk(ctx)
    if body == nil then
        return -- not the end yet: the chunk is held back
    end
    local _, lines = body:gsub("\n", "\n")
    state.bytes, state.lines = #body, lines
    ngx.arg[1] = body .. conf.footer
end

function plugin.log(conf, ctx)
    local state = ctx.example_body_stats or {}
    core.log.info("example-body-stats: ", core.json.delay_encode({
        uri = ctx.var.uri,
        status = ngx.status,
        bytes = state.bytes,
        lines = state.lines,
    }))
end

return plugin
