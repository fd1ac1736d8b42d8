-- moongate.uri_router: the small URI dispatcher behind the plugin API router (`api()` routes)
-- and the control API (`control_api()` routes and `/v1/*`). A route is
-- `{paths = "/a" or {"/a", "/b/*"}, methods = {"GET", ...} or nil, handler = fn}`.
--
-- A path matches as the routers APISIX builds these tables into (lua-resty-radixtree):
--   * "/a/b"      the exact path;
--   * "/a/*"      any path starting with "/a/" (the longest such prefix wins);
--   * "/a/:id/b"  with `params = true` only: `:name` takes one non-empty segment; otherwise the
--                 colon is plain text. A trailing "*name" takes the rest, as "*".
-- Exact paths are tried first, then parameter patterns in the order given, then prefixes,
-- longest first. A route whose `methods` leave out the request's method does not match, and the
-- next candidate is tried.

local type, ipairs, setmetatable = type, ipairs, setmetatable
local sub, find, byte = string.sub, string.find, string.byte
local sort = table.sort

local STAR = byte("*")

local _M = {}
local router_mt = { __index = _M }

local function allows(route, method)
    local methods = route.methods
    if not methods or #methods == 0 then
        return true
    end
    for _, m in ipairs(methods) do
        if m == method then
            return true
        end
    end
    return false
end

-- "/a/:id/*rest" -> the list of its segments, each {literal = "a"} or {param = true}, and
-- whether it ends in a catch-all.
local function compile_pattern(path)
    local segs = {}
    local rest = false
    local pos = 2
    while pos <= #path + 1 do
        local slash = find(path, "/", pos, true)
        local seg = sub(path, pos, (slash or #path + 1) - 1)
        if byte(seg, 1) == STAR and not slash then
            rest = true
        elseif byte(seg, 1) == byte(":") then
            segs[#segs + 1] = { param = true }
        else
            segs[#segs + 1] = { literal = seg }
        end
        if not slash then
            break
        end
        pos = slash + 1
    end
    return { segs = segs, rest = rest }
end

local function pattern_matches(pattern, uri)
    if byte(uri, 1) ~= byte("/") then
        return false
    end
    local segs = pattern.segs
    local pos = 2
    for i = 1, #segs do
        local slash = find(uri, "/", pos, true)
        local last = i == #segs
        if not slash and not last then
            return false
        end
        local seg = sub(uri, pos, (slash or #uri + 1) - 1)
        local want = segs[i]
        if want.param then
            if seg == "" then
                return false
            end
        elseif seg ~= want.literal then
            return false
        end
        if last then
            if pattern.rest then
                return slash ~= nil
            end
            return slash == nil
        end
        pos = slash + 1
    end
    return pattern.rest
end

-- A `:name` segment, or a `*name` segment at the end.
local function is_pattern(path)
    return find(path, "/:", 1, true) ~= nil or find(path, "/%*[^/]+$") ~= nil
end

--- A router over `routes`. `opts.params`: `:name` segments match one path segment.
function _M.new(routes, opts)
    local params = opts and opts.params
    local exact, patterns, prefixes = {}, {}, {}
    for i = 1, #routes do
        local route = routes[i]
        local paths = route.paths
        if type(paths) == "string" then
            paths = { paths }
        end
        for _, path in ipairs(paths or {}) do
            if params and is_pattern(path) then
                patterns[#patterns + 1] = { pattern = compile_pattern(path), route = route }
            elseif byte(path, -1) == STAR then
                prefixes[#prefixes + 1] = { prefix = sub(path, 1, -2), route = route,
                                            order = #prefixes }
            else
                local list = exact[path]
                if not list then
                    list = {}
                    exact[path] = list
                end
                list[#list + 1] = route
            end
        end
    end
    sort(prefixes, function(a, b)
        if #a.prefix ~= #b.prefix then
            return #a.prefix > #b.prefix
        end
        return a.order < b.order
    end)
    return setmetatable({ exact = exact, patterns = patterns, prefixes = prefixes }, router_mt)
end

--- The route for `uri` and `method`, or nil.
function _M.find(self, uri, method)
    local list = self.exact[uri]
    if list then
        for _, route in ipairs(list) do
            if allows(route, method) then
                return route
            end
        end
    end
    for _, p in ipairs(self.patterns) do
        if allows(p.route, method) and pattern_matches(p.pattern, uri) then
            return p.route
        end
    end
    for _, p in ipairs(self.prefixes) do
        if sub(uri, 1, #p.prefix) == p.prefix and allows(p.route, method) then
            return p.route
        end
    end
    return nil
end

--- `handler` made to answer what it returns, as APISIX answers a plugin API's return values
--- (and a phase's): `code, body` ends the request with them, a table body as JSON labelled
--- `application/json` unless the handler set a Content-Type; nothing returned, nothing sent.
function _M.answering(handler)
    local core_response = require("apisix.core").response
    return function(...)
        local code, body = handler(...)
        if code or body then
            if ngx.header["Content-Type"] == nil and type(body) == "table" then
                core_response.set_header("Content-Type", "application/json")
            end
            core_response.exit(code, body)
        end
    end
end

--- Calls the handler of the route for `uri` and `method` with `...`: true when one matched.
function _M.dispatch(self, uri, method, ...)
    local route = self:find(uri, method)
    if not route then
        return false
    end
    route.handler(...)
    return true
end

return _M
