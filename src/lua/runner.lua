-- moongate's phase runner: calls one phase of a run of Lua plugins of a chain, in the order the
-- Rust side computed (priority, `_meta.disable`, `_meta.filter` already applied), the way
-- APISIX's plugin runner calls them: `phase(conf, ctx)`, with `ctx._plugin_name` set.
-- A Lua error ends the run and the whole entry: plugins are called without a protected call
-- (see run_one), and Rust names the failing plugin from its timing mark and reports the error
-- with its traceback (`describe_failure`). In the phases that may answer, a `return code, body`
-- stops the run and becomes the answer (a table body as JSON plus a newline).
--
-- Nothing on the path of an entry loops when its plugins do not: a loop inside it would end
-- LuaJIT's trace of the entry there ("inner loop in root trace"), and the code before the loop
-- would run in the interpreter on every request.
--
-- It also makes a request's Lua state on the request's first entry: a table holding its APISIX
-- `ctx` (with `ctx.var`) and its `ngx.ctx`, kept in a slot of `live` Rust gives the request (the
-- table `ngx.ctx` reads too). A finished request's slot goes to a later request, whose first
-- entry recycles the state left in it and reuses its tables, as APISIX returns `ctx` and
-- `ctx.var` to its table pools at the end of a request (`ngx.ctx` is never reused). No call
-- into Rust makes or frees a state. Nothing is made per request that can be made once per
-- snapshot: chains carry their owner's `conf_*`, their flat plugin list and their
-- `matched_route`, built on first use.
local mark, live, picked, enter_group, route_match, upstream_peer = ...

local type, tostring, pairs = type, tostring, pairs
local traceback = debug.traceback
local plain = require("moongate.request").plain
local new_tab, clear_tab = require("table.new"), require("table.clear")
local json = require("cjson.safe").new()
-- APISIX's core.json settings: "/" is not escaped, arrays stay arrays.
json.encode_escape_forward_slash(false)
-- `$env://` / `$secret://` references in a conf: phase functions get a copy with the values
-- in place (as APISIX's plugin filter gives them), made again only when a value changed. A
-- conf with no string starting with `$` is used as it is, without loading apisix.secret.
local setmetatable, require, byte = setmetatable, require, string.byte
local plain_confs = setmetatable({}, { __mode = "k" })
local resolved = setmetatable({}, { __mode = "k" })
local secret

local function may_hold_ref(t, seen)
    seen[t] = true
    for _, v in pairs(t) do
        local tv = type(v)
        if tv == "string" then
            if byte(v, 1) == 36 then
                return true
            end
        elseif tv == "table" and not seen[v] and may_hold_ref(v, seen) then
            return true
        end
    end
    return false
end

local function same_values(a, b)
    for k, v in pairs(a) do
        if b[k] ~= v then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

local function conf_of(conf)
    if plain_confs[conf] or type(conf) ~= "table" then
        return conf
    end
    if not may_hold_ref(conf, {}) then
        plain_confs[conf] = true
        return conf
    end
    secret = secret or require("apisix.secret")
    if secret.has_secret_ref(conf) == false then
        plain_confs[conf] = true
        return conf
    end
    local vals = secret.collect_secret_values(conf, true)
    local hit = resolved[conf]
    if hit and same_values(hit.vals, vals) then
        return hit.conf
    end
    local copy = secret.fetch_secrets(conf, true)
    resolved[conf] = { vals = vals, conf = copy }
    return copy
end

-- apisix.core.ctx, loaded on the first plugin phase (a VM that only runs `*_by_lua` handlers
-- never loads the APISIX shim, and keeps plain cjson settings).
local core_ctx

local PHASES = { "rewrite", "access", "balancer", "before_proxy", "header_filter", "body_filter",
    "log" }
-- Phases whose `return code, body` answers the request.
local ANSWERS = 4

-- A run's mask with one bit set (bit i-1: plugin i) -> i, for the chains' first 52 plugins.
local SINGLE_BIT = {}
do
    local bit = 1
    for i = 1, 52 do
        SINGLE_BIT[bit] = i
        bit = bit * 2
    end
end
local BALANCER = 3

-- The text of an error that ended entry thread `co`: the plain message (as `pcall` would give
-- it) and the thread's traceback from where it was raised. Called by Rust on the failed thread.
local function describe_failure(co, err)
    local msg = plain(err)
    if type(msg) ~= "string" then
        msg = tostring(msg)
    end
    return traceback(co, msg, 0)
end

-- `ctx.matched_route.value` holds id, name, service_id and plugins; any other field (labels,
-- uri, upstream, …) is read from the route as configured, decoded on the first such read.
local config_view
local full_values = setmetatable({}, { __mode = "k" })
local route_value_mt = {
    __index = function(value, field)
        local full = full_values[value]
        if full == nil then
            config_view = config_view or require("moongate.config")
            local text = config_view.configured_item("routes", tostring(rawget(value, "id")))
            local item = text and json.decode(text)
            full = type(item) == "table" and type(item.value) == "table" and item.value or false
            full_values[value] = full
        end
        if full then
            return full[field]
        end
        return nil
    end,
}

-- The route object of `ctx.matched_route`, once per route and snapshot (called from Rust).
local function make_route(id, name, service_id, modified_index)
    if id == "" then
        -- A request no route matched (global rules only): no route fields at all.
        return {}
    end
    return {
        id = id,
        name = name,
        service_id = service_id,
        matched_route = {
            key = "/apisix/routes/" .. id,
            modifiedIndex = modified_index,
            value = setmetatable({ id = id, name = name, service_id = service_id },
                route_value_mt),
        },
    }
end

-- Tables of finished requests, ready for reuse.
local POOL_MAX = 64
local states, ctxs = { n = 0 }, { n = 0 }

local function put(pool, t)
    local n = pool.n
    if n < POOL_MAX then
        n = n + 1
        pool[n] = t
        pool.n = n
    end
end

local function take(pool)
    local n = pool.n
    if n == 0 then
        return nil
    end
    local t = pool[n]
    pool[n] = nil
    pool.n = n - 1
    return t
end

-- A finished request's state goes back to the pools; its `ctx.var` to core.ctx's.
local function recycle(state)
    local actx = state.ctx
    if actx then
        core_ctx.release_vars(actx)
        local matched = actx.curr_req_matched
        -- Plugins add fields of their own to `ctx`: table.clear, not a `pairs` loop setting each
        -- to nil (which would keep the keys' slots for the next request), as a loop here would
        -- be the first of the entry's trace.
        clear_tab(actx)
        if matched then
            if state.match_on_route then
                -- Only the route's match was set (new_ctx): the keys keep their slots.
                matched._path = nil
                matched._host = nil
            else
                clear_tab(matched)
            end
            actx.curr_req_matched = matched
        end
        put(ctxs, actx)
    end
    -- A state has these four fields only: set to nil, their keys keep their slots, and the
    -- next request sets them without inserting a key.
    state.route = nil
    state.match_on_route = nil
    state.ctx = nil
    state.ngx_ctx = nil
    put(states, state)
end

-- The entry flags Rust passes (host.rs): the route object holds this request's match
-- (`_match_path`, `_match_host`) and there are no uri parameters; this is the request's first
-- entry.
local MATCH_ON_ROUTE, FIRST = 1, 2

-- The current request's state (in `live[slot]`), made on its first entry from the state a
-- finished request left in the slot, or from the pools. A first entry may also name a slot to
-- empty (`trim`): Rust keeps only so many finished requests' states held in their slots.
local function state_of(route, flags, slot, trim)
    local state = live[slot]
    if flags < FIRST then
        return state
    end
    if state ~= nil then
        recycle(state)
    end
    if trim then
        local old = live[trim]
        if old ~= nil then
            live[trim] = nil
            recycle(old)
        end
    end
    state = take(states) or new_tab(0, 4)
    state.route = route
    state.match_on_route = flags % 2 == MATCH_ON_ROUTE
    live[slot] = state
    return state
end

-- APISIX's per-request `ctx`, made on the first plugin phase: the route fields, `ctx.var`
-- (apisix.core.ctx), and `ngx.ctx.api_ctx` pointing at it.
local function new_ctx(state)
    local route = state.route
    if not core_ctx then
        core_ctx = require("apisix.core.ctx")
    end
    -- Sized for the fields the runner and core.ctx add, so none of them grows the table.
    local actx = take(ctxs) or new_tab(0, 16)
    actx.route_id = route.id
    actx.route_name = route.name
    actx.service_id = route.service_id
    actx.matched_route = route.matched_route
    -- What the router matched: the route uri (`_path`) and its parameters (`uri_param_NAME`).
    local matched = actx.curr_req_matched
    if not matched then
        matched = new_tab(0, 2)
        actx.curr_req_matched = matched
    end
    if state.match_on_route then
        -- Only fields with a value: assigning nil to an absent key still inserts it.
        local path, host = route._match_path, route._match_host
        if path ~= nil then
            matched._path = path
        end
        if host ~= nil then
            matched._host = host
        end
    else
        route_match(matched)
    end
    core_ctx.set_vars_meta(actx)
    state.ctx = actx
    return actx
end

-- What a chain gives `ctx` when it starts running: its owner's `conf_*` and, for the route's
-- chain (plain or merged with a consumer's), APISIX's `ctx.plugins` (the flat
-- `{module, conf, ...}` list) and `ctx.matched_route` with the chain's confs as its plugins.
-- Both are built once per chain and snapshot and shared by its requests, as APISIX shares
-- route objects.
local function attach(state, actx, chain)
    local ngx_ctx = state.ngx_ctx
    if ngx_ctx == nil then
        -- ngx.ctx is never reused (a timer may hold it); sized for api_ctx and a few more.
        ngx_ctx = new_tab(0, 4)
        state.ngx_ctx = ngx_ctx
    end
    if ngx_ctx.api_ctx ~= actx then
        ngx_ctx.api_ctx = actx
        actx.ngx_ctx = ngx_ctx
    end
    if actx._moongate_chain == chain then
        return
    end
    actx._moongate_chain = chain
    actx.conf_type = chain.conf_type
    actx.conf_id = chain.conf_id
    actx.conf_version = chain.conf_version
    if chain.global then
        return
    end
    local flat = chain.flat
    if flat == nil or chain.flat_per_request then
        local confs = {}
        flat = {}
        local per_request = false
        for i = 1, #chain do
            local e = chain[i]
            if e then
                local conf = conf_of(e.conf)
                -- A conf with secret references resolves per request: no list to share.
                per_request = per_request or conf ~= e.conf
                flat[#flat + 1] = e.mod
                flat[#flat + 1] = conf
                confs[e.name] = e.conf
            end
        end
        chain.flat = flat
        chain.flat_per_request = per_request
        chain.confs = confs
    end
    -- The route object with the chain's confs, remade when the route object changed (a new
    -- snapshot keeps an unchanged chain's tables).
    local base = state.route.matched_route
    if chain.matched_for ~= base then
        local value = setmetatable({}, route_value_mt)
        for k, v in pairs(base.value) do
            value[k] = v
        end
        value.plugins = chain.confs
        chain.matched_route = { key = base.key, modifiedIndex = base.modifiedIndex, value = value }
        chain.matched_for = base
    end
    actx.plugins = flat
    actx.matched_route = chain.matched_route
end

local function answer(i, code, body)
    if type(body) == "table" then
        local encoded, err = json.encode(body)
        if not encoded then
            return "error", i, "failed to encode the body of the answer: " .. tostring(err)
        end
        body = encoded .. "\n"
    elseif body ~= nil and type(body) ~= "string" then
        body = tostring(body)
    end
    return "answer", i, code, body
end

-- APISIX's runner calls a phase through a local named `phase_func`, and `ngx.log` lines name
-- the calling function (`api-breaker.lua:179: phase_func(): …`), which tests grep for. Not a
-- tail call, so the name survives; APISIX keeps two results (code, body).
local function call_phase(phase_func, conf, ctx)
    local code, body = phase_func(conf, ctx)
    return code, body
end

local function run_one(actx, e, i, phase, marked)
    -- apisix.plugin.skip_plugin(ctx, name) leaves a plugin out for the rest of the request.
    local skip = actx._skip_plugins
    if skip and skip[e.name] then
        return nil
    end
    actx._plugin_name = e.name
    -- The time each plugin takes is accounted from here to the next mark (or the end of the
    -- run, marked from Rust). Rust marked the first plugin of a run given by a mask before
    -- calling (`marked`): one call into Rust less per run.
    if not marked then
        mark(i)
    end
    -- Called directly: a trace LuaJIT starts inside a protected call (from a side exit in
    -- the plugin, or a loop in it) cannot return out of it ("NYI: return to lower frame"),
    -- and after a few such aborts the rest of every request runs in the interpreter.
    return call_phase(e.mod[phase], conf_of(e.conf), actx)
end

-- What ends a run after plugin `i` returned `code, body`: in the phases that may answer, a
-- `return code, body`. Nothing when the run goes on.
local function ended(i, may_answer, code, body)
    if may_answer and (code or body) then
        return answer(i, code, body)
    end
    return nil
end

-- Runs `phase` of the chain's plugins given by `mask` (bit i-1 set: entry i runs, in index
-- order) or, when `mask` is 0, by the list of indices `listed`.
--
-- No function on an entry's path takes `...`: a trace started inside a vararg function cannot
-- return from it to a lower frame ("NYI: return of vararg func to lower frame"), and after a
-- few such aborts that part of every request runs in the interpreter.
local function run_phase(state, chain, phase_no, mask, listed)
    local actx = state.ctx or new_ctx(state)
    attach(state, actx, chain)
    if phase_no == BALANCER then
        -- The node the proxy picked for this try, as APISIX's balancer leaves it on `ctx`.
        local host, port, try_no = picked()
        actx.balancer_ip = host
        actx.balancer_port = port
        actx.balancer_try_count = try_no
        actx.picked_server = { host = host, port = port }
    end
    if phase_no > ANSWERS and actx.balancer_ip == nil then
        -- After the upstream answered: the node it went to, as APISIX's variables read it.
        actx.balancer_ip, actx.balancer_port = upstream_peer()
    end
    local phase = PHASES[phase_no]
    local may_answer = phase_no <= ANSWERS
    local only = SINGLE_BIT[mask]
    if only ~= nil then
        -- One plugin (the usual run): no loop. A loop of one or two trips inside the trace
        -- recorded from the entry aborts it ("inner loop in root trace"), and after a few
        -- aborts LuaJIT leaves the whole entry to the interpreter on every request.
        local kind, a, b, c =
            ended(only, may_answer, run_one(actx, chain[only], only, phase, true))
        if kind then
            return kind, a, b, c
        end
    elseif mask > 0 then
        local i = 0
        local marked = true
        while mask > 0 do
            i = i + 1
            local bit = mask % 2
            mask = (mask - bit) / 2
            if bit == 1 then
                local kind, a, b, c =
                    ended(i, may_answer, run_one(actx, chain[i], i, phase, marked))
                marked = false
                if kind then
                    return kind, a, b, c
                end
            end
        end
    else
        for k = 1, #listed do
            local i = listed[k]
            local kind, a, b, c = ended(i, may_answer, run_one(actx, chain[i], i, phase))
            if kind then
                return kind, a, b, c
            end
        end
    end
    -- After rewrite: the consumer an auth plugin attached, for the consumer merge; after
    -- rewrite and access, the upstream a plugin named (traffic-split's ctx.upstream_id).
    if phase_no > 2 then
        return true
    end
    return true, phase_no == 1 and actx.consumer_name or nil, actx.upstream_id
end

-- The entry point: the route object, the entry flags, the slot of the request's state and a
-- slot to empty (see state_of), then either a chain, a phase number and the plugins to run as
-- a bit mask (see run_phase), or a `*_by_lua` handler function and 0. Returns what the run
-- ended with.
local function run(route, flags, slot, trim, chain, phase_no, mask)
    local state = state_of(route, flags, slot, trim)
    if phase_no == 0 then
        chain()
        return nil
    end
    return run_phase(state, chain, phase_no, mask)
end

-- The entry point for plugins past the bit mask's reach (a chain of more than 52): as `run`,
-- with their indices after the phase number.
local function run_listed(route, flags, slot, trim, chain, phase_no, ...)
    local state = state_of(route, flags, slot, trim)
    return run_phase(state, chain, phase_no, 0, { ... })
end

-- One group of `run_groups`: `false` and what ended the run when it did not go through (a
-- consumer to merge, output printed, an answer or an error), else `true` and the group's phase.
local function run_group(state, g, prev_phase, chain, ps, mask)
    local first = ps % 64
    ps = (ps - first) / 64
    local phase_no = (ps - ps % 256) / 256
    if g > 1 then
        if prev_phase == 1 and phase_no ~= 1 then
            local actx = state.ctx
            local consumer = actx and actx.consumer_name
            if consumer then
                return false, "stop", g, consumer
            end
        end
        -- Enters the group's phase and marks its first plugin (as Rust marked group 1's).
        if not enter_group(phase_no, ps % 256, first + 1) then
            return false, "stop", g
        end
    end
    local kind, i, code, body = run_phase(state, chain, phase_no, mask)
    if kind ~= true then
        return false, kind, i, code, body, g
    end
    return true, phase_no
end

-- Several runs in one call (after the same first four arguments as `run`), `n` groups of (chain,
-- (phase number * 256 + chain slot) * 64 + index of its first plugin (0-based), bit mask):
-- the rewrite and access phases of a request when nothing between them needs Rust. Between
-- the last rewrite and the first access group, a consumer an auth plugin attached stops the
-- call (Rust merges its plugins first: `"stop", group, consumer`); so does output printed by a
-- group (`enter_group` says so). Otherwise returns what ended a run, with its group number
-- last, or `true` when all went through.
--
-- The groups come as named parameters, not `...`: LuaJIT cannot compile `select(i, ...)` with
-- a variable `i` (NYI: VARG), and a trace that aborts there leaves the whole call to the
-- interpreter on every request.
local function run_groups(route, flags, slot, trim, n, c1, p1, m1, c2, p2, m2, c3, p3, m3, c4,
        p4, m4)
    local state = state_of(route, flags, slot, trim)
    -- Group after group without a loop (see run_phase): at most four.
    local ok, a, b, c, d, e = run_group(state, 1, nil, c1, p1, m1)
    if ok and n >= 2 then
        ok, a, b, c, d, e = run_group(state, 2, a, c2, p2, m2)
        if ok and n >= 3 then
            ok, a, b, c, d, e = run_group(state, 3, a, c3, p3, m3)
            if ok and n >= 4 then
                ok, a, b, c, d, e = run_group(state, 4, a, c4, p4, m4)
            end
        end
    end
    if not ok then
        return a, b, c, d, e
    end
    -- Only rewrite groups ran: the consumer (if any) still needs its merge.
    local actx = state.ctx
    return true, a == 1 and actx.consumer_name or nil, actx.upstream_id
end

return run, make_route, run_groups, describe_failure, run_listed
