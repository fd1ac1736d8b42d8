-- core.utils: address parsing, variable templates, header checks, configuration warnings, the
-- long-sleep helper and UUIDv7 — the grab bag plugins share.

local core_str = require("apisix.core.string")
local log = require("apisix.core.log")
local ngx = ngx
local ngx_re = require("ngx.re")
local re_gsub, re_match, re_gmatch = ngx.re.gsub, ngx.re.match, ngx.re.gmatch
local bit = require("bit")
local ffi = require("ffi")
local type, tonumber, tostring, ipairs, require, error =
    type, tonumber, tostring, ipairs, require, error
local byte, sub, format, gsub = string.byte, string.sub, string.format, string.gsub
local floor, random = math.floor, math.random
local rfind_char = core_str.rfind_char

local _M = { version = 0.2 }

-- A seed for math.randomseed from /dev/urandom.
function _M.get_seed_from_urandom()
    local f, err = io.open("/dev/urandom", "rb")
    if not f then
        return nil, "failed to open /dev/urandom: " .. tostring(err)
    end
    local bytes = f:read(4)
    f:close()
    if not bytes or #bytes < 4 then
        return nil, "failed to read data from /dev/urandom"
    end
    local seed = 0
    for i = 1, 4 do
        seed = 256 * seed + byte(bytes, i)
    end
    return seed
end

function _M.split_uri(uri)
    return ngx_re.split(uri, "/")
end

local function host_and_port(addr)
    local pos = rfind_char(addr, ":", #addr - 1)
    if not pos then
        return addr, nil
    end
    return sub(addr, 1, pos - 1), tonumber(sub(addr, pos + 1))
end

-- `"host:port"`, `"1.2.3.4:80"`, `"[::1]:80"`, `"::1"` → host, port (nil when absent). A bare
-- IPv6 address keeps its colons; a bracketed one keeps its brackets.
function _M.parse_addr(addr)
    if byte(addr, 1) == 91 then -- "["
        if byte(addr, #addr) == 93 then -- "]"
            return addr, nil
        end
        local pos = rfind_char(addr, ":", #addr - 1)
        if not pos or byte(addr, pos - 1) ~= 93 then
            return addr, nil
        end
        return sub(addr, 1, pos - 1), tonumber(sub(addr, pos + 1))
    end
    local colons = 0
    for i = 1, #addr do
        local c = byte(addr, i)
        if c == 46 then -- "." first: IPv4 or a host name
            return host_and_port(addr)
        elseif c == 58 then
            colons = colons + 1
            if colons == 2 then
                return addr, nil -- IPv6 without port
            end
        end
    end
    return host_and_port(addr)
end

-- resty.ipmatcher's parsers, loaded when first used.
function _M.parse_ipv4(ip)
    return require("resty.ipmatcher").parse_ipv4(ip)
end

function _M.parse_ipv6(ip)
    return require("resty.ipmatcher").parse_ipv6(ip)
end

-- Escapes what may not appear in a URI path (nginx's NGX_ESCAPE_URI set).
function _M.uri_safe_encode(uri)
    return ngx.escape_uri(uri, 0)
end

function _M.escape_uri_control_chars(uri)
    return (gsub(uri, "[%z\1-\31\127]", function(c)
        return format("%%%02X", byte(c))
    end))
end

-- A header name is visible ASCII without ':'.
function _M.validate_header_field(field)
    for i = 1, #field do
        local b = byte(field, i)
        if b <= 32 or b >= 127 or b == 58 then
            return false
        end
    end
    return true
end

-- A header value has no control characters (non-strings pass).
function _M.validate_header_value(value)
    if type(value) ~= "string" then
        return true
    end
    for i = 1, #value do
        local b = byte(value, i)
        if b < 32 or b >= 127 then
            return false
        end
    end
    return true
end

ffi.cdef([[int gethostname(char *name, size_t len);]])
local hostname

function _M.gethostname()
    if hostname then
        return hostname
    end
    local buf = ffi.new("char[256]")
    if ffi.C.gethostname(buf, 256) == 0 then
        hostname = ffi.string(buf)
    else
        hostname = "unknown"
        log.error("failed to call gethostname()")
    end
    return hostname
end

-- ngx.sleep in slices of at most 10 s, stopping early when the worker exits.
local MAX_SLICE = 10
local function sleep(sec)
    while sec > MAX_SLICE do
        ngx.sleep(MAX_SLICE)
        if ngx.worker.exiting() then
            return
        end
        sec = sec - MAX_SLICE
    end
    return ngx.sleep(sec)
end
_M.sleep = sleep

-- `resolve_var(tpl, vars, escaper)`: replaces `$name`, `${name}` and `${name ?? default}`
-- (not after a backslash) with `vars[name]` ("" when missing and no default), each passed
-- through `escaper` if given. Returns `text, err, number_of_variables_resolved`.
local VAR_RE = [[(?<!\\)\$(\{\s*([^}]+?)\s*\}|([\w\.]+))]]

function _M.resolve_var(tpl, vars, escaper)
    local n = 0
    if not tpl or not core_str.find(tpl, "$") then
        return tpl, nil, n
    end
    local res, _, err = re_gsub(tpl, VAR_RE, function(m)
        local name = m[2] or m[3]
        local parts = ngx_re.split(name, [[\s*\?\?\s*]])
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

function _M.resolve_var_with_captures(tpl, captures)
    if not tpl or not core_str.find(tpl, "$") then
        return tpl, nil
    end
    captures = captures or {}
    local res, _, err = re_gsub(tpl, CAPTURE_RE, function(m)
        return captures[tonumber(m[1])] or ""
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
    for i = 1, #parts - 1 do
        conf = conf[parts[i]]
        if type(conf) ~= "table" then
            return nil, nil
        end
    end
    return conf, parts[#parts]
end

local function warn_plain(field, plugin_name, value)
    local m, err = re_match(value, "^https")
    if not m and not err then
        log.warn("Using ", plugin_name, " ", field, " with no TLS is a security risk")
    end
end

-- Warns for each of the conf's `fields` (dotted paths) that holds a non-https URL.
function _M.check_https(fields, conf, plugin_name)
    for _, field in ipairs(fields) do
        local t, key = holder(field, conf)
        local v = t and t[key]
        if type(v) == "table" then
            for _, item in ipairs(v) do
                warn_plain(field, plugin_name, item)
            end
        elseif v then
            warn_plain(field, plugin_name, v)
        end
    end
end

-- Warns for each of the conf's boolean `fields` that is set and not true (ssl_verify = false).
function _M.check_tls_bool(fields, conf, plugin_name)
    for _, field in ipairs(fields) do
        local t, key = holder(field, conf)
        if not t then
            return
        end
        local v = t[key]
        if v ~= true and v ~= nil then
            log.warn("Keeping ", field, " disabled in ", plugin_name, " configuration is a security risk")
        end
    end
end

function _M.set_var_rate_limiting_info(ctx, key, limit, remaining, reset)
    if not ctx then
        return
    end
    ctx.var.rate_limiting_info = format(
        '{"rate_limiting_key":"%s","rate_limiting_limit":%d,'
            .. '"rate_limiting_remaining":%d,"rate_limiting_reset":%d}',
        key or "",
        limit or 0,
        tonumber(remaining) or 0,
        reset or 0
    )
end

-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then an 18-bit counter (12 bits after the
-- version nibble, 6 after the variant bits) so ids made in one millisecond still sort, then
-- 56 random bits drawn once per millisecond.
local last_ms, seq, rand = 0, 0, { 0, 0, 0, 0, 0, 0, 0 }

local function new_millisecond(ms)
    last_ms, seq = ms, 0
    for i = 1, 7 do
        rand[i] = random(0, 255)
    end
end

function _M.generate_uuid_v7()
    local ms = floor(ngx.now() * 1000)
    if ms > last_ms then
        new_millisecond(ms)
    else
        ms = last_ms
        seq = seq + 1
        if seq > 0x3ffff then
            -- Counter exhausted: wait for the clock.
            repeat
                ngx.update_time()
                ms = floor(ngx.now() * 1000)
            until ms > last_ms
            new_millisecond(ms)
        end
    end
    local hi = floor(ms / 0x10000) -- top 32 bits of the 48
    local lo = ms % 0x10000
    return format(
        "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        hi,
        lo,
        bit.bor(0x7000, bit.rshift(seq, 6)),
        bit.bor(0x80, bit.band(seq, 0x3f)),
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
function _M.dns_parse(domain)
    return require("apisix.core.resolver").parse_domain_record(domain)
end

function _M.set_resolver()
    error("core.utils.set_resolver is not supported by moongate: names resolve through the system resolver", 2)
end

function _M.get_resolver()
    error("core.utils.get_resolver is not supported by moongate: names resolve through the system resolver", 2)
end

return _M
