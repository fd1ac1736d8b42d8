-- core.utils: address parsing, variable templates, header checks, configuration warnings, the
-- long-sleep helper and UUIDv7 — the grab bag plugins share.

local ngx = ngx
local cstr = require("apisix.core.string")
local clog = require("apisix.core.log")
local resplit = require("ngx.re").split
local re_gsub, re_match, re_gmatch = ngx.re.gsub, ngx.re.match, ngx.re.gmatch
local bitops = require("bit")
local band, bor, rshift = bitops.band, bitops.bor, bitops.rshift
local ffi = require("ffi")
local type, tonumber, tostring, ipairs, require, error =
    type, tonumber, tostring, ipairs, require, error
local byte, sub, format, gsub = string.byte, string.sub, string.format, string.gsub
local floor, random = math.floor, math.random

local utils = { version = 0.2 }

-- A seed for math.randomseed from /dev/urandom.
function utils.get_seed_from_urandom()
    local src, why = io.open("/dev/urandom", "rb")
    if not src then
        return nil, "failed to open /dev/urandom: " .. tostring(why)
    end
    local bytes = src:read(4)
    src:close()
    if not bytes or #bytes < 4 then
        return nil, "failed to read data from /dev/urandom"
    end
    local seed = 0
    for i = 1, 4 do
        seed = 256 * seed + byte(bytes, i)
    end
    return seed
end

-- "/a/b" → {"", "a", "b"}.
function utils.split_uri(path)
    return resplit(path, "/")
end

-- The colon that separates a port: the last one, not counting a colon in the last byte.
local function port_colon(text)
    return cstr.rfind_char(text, ":", #text - 1)
end

local function host_and_port(text)
    local at = port_colon(text)
    if at == nil then
        return text, nil
    end
    return sub(text, 1, at - 1), tonumber(sub(text, at + 1))
end

-- `"host:port"`, `"1.2.3.4:80"`, `"[::1]:80"`, `"::1"` → host, port (nil when absent). A bare
-- IPv6 address keeps its colons; a bracketed one keeps its brackets.
local OPEN_BRACKET, CLOSE_BRACKET, DOT, COLON = 91, 93, 46, 58

function utils.parse_addr(text)
    if byte(text, 1) == OPEN_BRACKET then
        -- "[v6]" alone, or "[v6]:port".
        local at = byte(text, -1) ~= CLOSE_BRACKET and port_colon(text)
        if at and byte(text, at - 1) == CLOSE_BRACKET then
            return host_and_port(text)
        end
        return text, nil
    end
    -- A dot before a second colon means IPv4 or a name; two colons first mean bare IPv6.
    local seen_colon = false
    for i = 1, #text do
        local c = byte(text, i)
        if c == DOT then
            break
        end
        if c == COLON then
            if seen_colon then
                return text, nil
            end
            seen_colon = true
        end
    end
    return host_and_port(text)
end

-- resty.ipmatcher's parsers, loaded when first used.
function utils.parse_ipv4(ip)
    return require("resty.ipmatcher").parse_ipv4(ip)
end

function utils.parse_ipv6(ip)
    return require("resty.ipmatcher").parse_ipv6(ip)
end

-- Escapes what may not appear in a URI path (nginx's NGX_ESCAPE_URI set).
function utils.uri_safe_encode(text)
    return ngx.escape_uri(text, 0)
end

local function percent_hex(ch)
    return format("%%%02X", byte(ch))
end

function utils.escape_uri_control_chars(text)
    return (gsub(text, "[%z\1-\31\127]", percent_hex))
end

-- True when every byte of `text` satisfies `ok(byte)`.
local function all_bytes(text, ok)
    for i = 1, #text do
        if not ok(byte(text, i)) then
            return false
        end
    end
    return true
end

local function name_byte(b)
    return b > 32 and b < 127 and b ~= COLON
end

local function value_byte(b)
    return b >= 32 and b < 127
end

-- A header name: visible ASCII without ':'.
function utils.validate_header_field(name)
    return all_bytes(name, name_byte)
end

-- A header value: no control characters. Non-strings (numbers, lists) are let through.
function utils.validate_header_value(val)
    return type(val) ~= "string" or all_bytes(val, value_byte)
end

ffi.cdef([[int gethostname(char *name, size_t len);]])
local hostname

function utils.gethostname()
    if hostname then
        return hostname
    end
    local buf = ffi.new("char[256]")
    if ffi.C.gethostname(buf, 256) == 0 then
        hostname = ffi.string(buf)
    else
        hostname = "unknown"
        clog.error("failed to call gethostname()")
    end
    return hostname
end

-- ngx.sleep in slices of at most 10 s, stopping early when the worker exits.
local MAX_SLICE = 10
function utils.sleep(seconds)
    local left = seconds
    while left > MAX_SLICE do
        ngx.sleep(MAX_SLICE)
        if ngx.worker.exiting() then
            return
        end
        left = left - MAX_SLICE
    end
    return ngx.sleep(left)
end

-- `resolve_var(tpl, vars, escaper)`: replaces `$name`, `${name}` and `${name ?? default}`
-- (not after a backslash) with `vars[name]` ("" when missing and no default), each passed
-- through `escaper` if given. Returns `text, err, number_of_variables_resolved`.
local VAR_RE = [[(?<!\\)\$(\{\s*([^}]+?)\s*\}|([\w\.]+))]]

function utils.resolve_var(tpl, vars, escaper)
    local n = 0
    if not tpl or not cstr.find(tpl, "$") then
        return tpl, nil, n
    end
    local res, _, err = re_gsub(tpl, VAR_RE, function(m)
        local name = m[2] or m[3]
        local parts = resplit(name, [[\s*\?\?\s*]])
        local v = vars[parts[1]]
        if v == nil then
            if #parts == 1 then
                return ""
            end
            v = parts[2]
        end
        n = n + 1
        v = tostring(v)
        if escaper then
            return escaper(v)
        end
        return v
    end, "jo")
    if not res then
        return nil, err
    end
    return res, nil, n
end

-- `$1`, `${1}` from a regex match's captures ("" when missing).
local CAPTURE_RE = [[ (?<! \\) \$ \{? (\d+) \}? ]]

function utils.resolve_var_with_captures(tpl, captures)
    if not tpl or not cstr.find(tpl, "$") then
        return tpl, nil
    end
    local found = captures or {}
    local res, _, err = re_gsub(tpl, CAPTURE_RE, function(m)
        return found[tonumber(m[1])] or ""
    end, "jox")
    if not res then
        return nil, err
    end
    return res, nil
end

-- The table holding the last segment of a dotted path ("a.b.c" → conf.a.b, "c").
local function holder(path, conf)
    local parts = {}
    local it = re_gmatch(path, [[([^\.]+)]])
    if not it then
        return conf, path
    end
    while true do
        local m = it()
        if not m then
            break
        end
        parts[#parts + 1] = m[0]
    end
    local node = conf
    for i = 1, #parts - 1 do
        node = node[parts[i]]
        if type(node) ~= "table" then
            return nil, nil
        end
    end
    return node, parts[#parts]
end

local function warn_plain(field, plugin_name, value)
    local m, err = re_match(value, "^https")
    if not m and not err then
        clog.warn("Using ", plugin_name, " ", field, " with no TLS is a security risk")
    end
end

-- Warns for each of the conf's `fields` (dotted paths) that holds a non-https URL.
function utils.check_https(paths, conf, plugin_name)
    for _, path in ipairs(paths) do
        local parent, key = holder(path, conf)
        local found = parent and parent[key]
        if found then
            for _, url in ipairs(type(found) == "table" and found or { found }) do
                warn_plain(path, plugin_name, url)
            end
        end
    end
end

-- Warns for each of the conf's boolean `fields` that is set and not true (ssl_verify = false).
function utils.check_tls_bool(paths, conf, plugin_name)
    for _, path in ipairs(paths) do
        local parent, key = holder(path, conf)
        if parent == nil then
            -- As APISIX: a missing parent ends the checks.
            return
        end
        local flag = parent[key]
        if flag ~= nil and flag ~= true then
            clog.warn("Keeping ", path, " disabled in ", plugin_name, " configuration is a security risk")
        end
    end
end

-- The JSON object logger plugins read back from `$rate_limiting_info`; written by hand so the
-- member order is fixed.
local RATE_INFO = table.concat({
    '{"rate_limiting_key":"%s"',
    '"rate_limiting_limit":%d',
    '"rate_limiting_remaining":%d',
    '"rate_limiting_reset":%d}',
}, ",")

function utils.set_var_rate_limiting_info(ctx, key, limit, remaining, reset)
    if ctx then
        ctx.var.rate_limiting_info =
            format(RATE_INFO, key or "", limit or 0, tonumber(remaining) or 0, reset or 0)
    end
end

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then an 18-bit counter (12 bits after the
-- version nibble, 6 after the variant bits) so ids made in one millisecond still sort, then
-- 56 random bits drawn once per millisecond. The state and the clock are upvalues of
-- generate_uuid_v7 under the names APISIX's own tests reach through `debug.setupvalue`
-- (`_v7_last_ms`, `_v7_seq`, `_v7_rand_b`, `ngx_now`, `ngx_update_time`), so those tests can
-- drive it.
local _v7_last_ms, _v7_seq, _v7_rand_b = 0, 0, { 0, 0, 0, 0, 0, 0, 0 }
local ngx_now, ngx_update_time = ngx.now, ngx.update_time

function utils.generate_uuid_v7()
    local ms = floor(ngx_now() * 1000)
    if ms <= _v7_last_ms then
        -- Same millisecond, or the clock went back: stay on the last one, count up.
        ms = _v7_last_ms
        _v7_seq = _v7_seq + 1
        if _v7_seq > 0x3ffff then
            -- Counter exhausted: wait for the clock (the cached time must be refreshed).
            repeat
                ngx_update_time()
                ms = floor(ngx_now() * 1000)
            until ms > _v7_last_ms
        end
    end
    if ms > _v7_last_ms then
        _v7_last_ms, _v7_seq = ms, 0
        for i = 1, 7 do
            _v7_rand_b[i] = random(0, 255)
        end
    end
    local seq, rand = _v7_seq, _v7_rand_b
    local hi = floor(ms / 0x10000) -- top 32 bits of the 48
    local lo = ms % 0x10000
    return format(
        "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        hi,
        lo,
        bor(0x7000, rshift(seq, 6)),
        bor(0x80, band(seq, 0x3f)),
        rand[1],
        rand[2],
        rand[3],
        rand[4],
        rand[5],
        rand[6],
        rand[7]
    )
end

-- DNS helpers over the host's resolver (see core.resolver).
function utils.dns_parse(domain)
    return require("apisix.core.resolver").parse_domain_record(domain)
end

function utils.set_resolver()
    error("core.utils.set_resolver is not supported by moongate: names resolve through the system resolver", 2)
end

function utils.get_resolver()
    error("core.utils.get_resolver is not supported by moongate: names resolve through the system resolver", 2)
end

return utils
