-- apisix.schema_def: JSON schemas of the resources (route, service, upstream, consumer,
-- credential, ssl, global_rule, plugin_config, consumer_group, stream_route, proto) and of the
-- pieces plugins reuse in their own schemas (id_schema, host_def, ip_def, uri_def,
-- method_schema, timeout_def, the health checkers, the `_meta` schema injected into every
-- plugin). Read through `core.schema.NAME`.
--
-- What users' confs are judged by is APISIX's: names, types, patterns, bounds, defaults, the
-- lists of `required`/`anyOf`/`oneOf`. The validator visits `properties` with `pairs`, whose
-- order depends on how the table was built; each `properties` table is therefore one table
-- constructor with its keys in APISIX's order, so a conf with several faults reports the same
-- one first. The values are built from the small constructors below.

local pairs, ipairs = pairs, ipairs

local defs = { version = 0.5 }

------------------------------------------------------------------------------------------------
-- Constructors of schema fragments

-- Copies `extra` (may be nil) into `schema` and returns it.
local function with(schema, extra)
    if extra then
        for k, v in pairs(extra) do
            schema[k] = v
        end
    end
    return schema
end

local function str(min_len, max_len, extra)
    return with({ type = "string", minLength = min_len, maxLength = max_len }, extra)
end

local function int(lo, hi, dflt)
    return { type = "integer", minimum = lo, maximum = hi, default = dflt }
end

local function num(lo, dflt)
    return { type = "number", minimum = lo, default = dflt }
end

local function bool(dflt)
    return { type = "boolean", default = dflt }
end

local function one_of_strings(values, dflt)
    return { type = "string", enum = values, default = dflt }
end

-- `{ required = {...} }`, the building block of the anyOf/oneOf alternatives.
local function needs(...)
    return { required = { ... } }
end

local function obj(props, extra)
    return with({ type = "object", properties = props }, extra)
end

local function list(items, extra)
    return with({ type = "array", items = items }, extra)
end

local function note(text, schema)
    schema.description = text
    return schema
end

-- At most one of `a` and `b`: neither, or exactly one.
local function exclusive(a, b)
    return {
        oneOf = {
            { ["not"] = { anyOf = { needs(a), needs(b) } } },
            needs(a),
            needs(b),
        },
    }
end

------------------------------------------------------------------------------------------------
-- Shared fragments

local opaque_plugins = { type = "object" } -- each plugin's entry is checked by the plugin

local ID_PATTERN = [[^[a-zA-Z0-9-_.]+$]]
local ident = { anyOf = { str(1, 64, { pattern = ID_PATTERN }), { type = "integer", minimum = 1 } } }
defs.id_schema = ident

defs.anonymous_consumer_schema = str(1)

-- WWW-Authenticate realm: printable ASCII except `"` and `\`.
local REALM_PATTERN = "^[\x20-\x21\x23-\x5B\\]-\x7E]+$"
function defs.get_realm_schema(dflt)
    return str(1, 128, { pattern = REALM_PATTERN, default = dflt })
end

-- `*` alone, or a host name/address that may start with a `*` wildcard.
local HOST_PATTERN = "^\\*$|^\\*?[0-9a-zA-Z-._\\[\\]:]+$"
local host = { type = "string", pattern = HOST_PATTERN }
defs.host_def = host

-- Addresses and CIDRs. Plain addresses go through the format checkers (the system's parser);
-- the IPv6 CIDR pattern is deliberately loose.
local V4_OCTET = "([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])"
local V4 = table.concat({ V4_OCTET, V4_OCTET, V4_OCTET, V4_OCTET }, [[\.]])
local V6_LOOSE = "([a-fA-F0-9]{0,4}:){1,8}(:[a-fA-F0-9]{0,4}){0,8}([a-fA-F0-9]{0,4})?"
local addr_forms = {
    { title = "IPv4", type = "string", format = "ipv4" },
    { title = "IPv4/CIDR", type = "string", pattern = "^" .. V4 .. "/([12]?[0-9]|3[0-2])$" },
    { title = "IPv6", type = "string", format = "ipv6" },
    { title = "IPv6/CIDR", type = "string", pattern = "^" .. V6_LOOSE .. "/[0-9]{1,3}$" },
}
defs.ip_def = addr_forms

-- scheme://name-or-[v6][:port]…
defs.uri_def = { type = "string", pattern = [=[^[^\/]+:\/\/([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?]=] }

local epoch = { type = "integer" }
local client_addr = note("client IP", { type = "string", anyOf = addr_forms })
local label_value = note("value of label", str(1, 256, { pattern = [[^\S+$]] }))
defs.label_value_def = label_value
local label_map = note("key/value pairs to specify attributes", {
    type = "object",
    patternProperties = { [".*"] = label_value },
})
local title = str(1, 256)
local blurb = { type = "string", maxLength = 256 }

local function positive()
    return { type = "number", exclusiveMinimum = 0 }
end
local timeouts = obj({ connect = positive(), send = positive(), read = positive() }, {
    required = { "connect", "send", "read" },
})
defs.timeout_def = timeouts

local HTTP_METHODS = {
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
}
local http_method = note("HTTP method", { type = "string", enum = HTTP_METHODS })
defs.method_schema = http_method

-- APISIX 2.x's way for a plugin to be switched off, before `_meta.disable`.
defs.plugin_disable_schema = { disable = { type = "boolean" } }

------------------------------------------------------------------------------------------------
-- Health checks

local function status_codes(dflt)
    return list(int(200, 599), { minItems = 1, uniqueItems = true, default = dflt })
end

-- Health counters are bytes in the checker's shared state, hence 254.
local function tally(lo, dflt)
    return int(lo, 254, dflt)
end

local function every(dflt)
    return { type = "integer", minimum = 1, default = dflt }
end

local CHECK_TYPES = { "http", "https", "tcp" }

local active_checks = obj({
    type = one_of_strings(CHECK_TYPES, "http"),
    timeout = { type = "number", default = 1 },
    concurrency = { type = "integer", default = 10 },
    host = host,
    port = int(1, 65535),
    http_method = one_of_strings(HTTP_METHODS, "GET"),
    http_path = { type = "string", default = "/" },
    http_req_body = { type = "string", default = "" },
    https_verify_certificate = bool(true),
    healthy = obj({
        interval = every(1),
        http_statuses = status_codes({ 200, 302 }),
        successes = tally(1, 2),
    }),
    unhealthy = obj({
        interval = every(1),
        http_statuses = status_codes({ 429, 404, 500, 501, 502, 503, 504, 505 }),
        http_failures = tally(1, 5),
        tcp_failures = tally(1, 2),
        timeouts = tally(1, 3),
    }),
    req_headers = list({ type = "string", uniqueItems = true }, { minItems = 1 }),
})
defs.health_checker_active = active_checks

local OK_STATUSES = {}
for _, range in ipairs({ { 200, 208 }, { 226, 226 }, { 300, 308 } }) do
    for code = range[1], range[2] do
        OK_STATUSES[#OK_STATUSES + 1] = code
    end
end

local passive_checks = obj({
    type = one_of_strings(CHECK_TYPES, "http"),
    healthy = obj({
        http_statuses = status_codes(OK_STATUSES),
        successes = tally(0, 5),
    }),
    unhealthy = obj({
        http_statuses = status_codes({ 429, 500, 503 }),
        tcp_failures = tally(0, 2),
        timeouts = tally(0, 7),
        http_failures = tally(0, 5),
    }),
})
defs.health_checker_passive = passive_checks

-- `checks`: active alone, or active with passive; passive alone is refused.
defs.health_checker = obj({ active = active_checks, passive = passive_checks }, {
    anyOf = { needs("active"), needs("active", "passive") },
})

------------------------------------------------------------------------------------------------
-- Upstreams

local port = note("port of node", int(1, 65535))
local weight = note("weight of node", { type = "integer", minimum = 0 })

local function node_entry(host_schema, prio)
    return obj({
        host = host_schema,
        port = port,
        weight = weight,
        priority = prio,
        metadata = note("metadata of node", { type = "object" }),
    }, { required = { "host", "weight" } })
end

-- `nodes`: {"host:port" = weight} or a list of node objects.
local node_set = {
    anyOf = {
        { type = "object", patternProperties = { [".*"] = weight } },
        list(node_entry(host, note("priority of node", { type = "integer", default = 0 }))),
    },
}

-- What discovery returns: any host (a name), port optional.
defs.discovery_nodes = list(node_entry(note("domain or ip", {}), note("priority of node", { type = "integer" })))

local pem_cert = str(128, 65536)
local pem_key = str(64, 65536)

local upstream_tls = obj({
    client_cert_id = ident,
    client_cert = pem_cert,
    client_key = pem_key,
    verify = note("verify the upstream's certificate (kafka upstreams)", bool(false)),
}, {
    dependencies = {
        client_cert = needs("client_key"),
        client_key = needs("client_cert"),
        client_cert_id = { ["not"] = needs("client_cert", "client_key") },
    },
})

local HASH_SOURCES = { "vars", "header", "cookie", "consumer", "vars_combinations" }
local UPSTREAM_SCHEMES = { "grpc", "grpcs", "http", "https", "tcp", "tls", "udp", "kafka" }

local upstream = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    nodes = node_set,
    retries = { type = "integer", minimum = 0 },
    retry_timeout = num(0),
    timeout = timeouts,
    tls = upstream_tls,
    keepalive_pool = obj({
        size = { type = "integer", minimum = 1, default = 320 },
        idle_timeout = num(0, 60),
        requests = { type = "integer", minimum = 1, default = 1000 },
    }),
    type = note("load balancing algorithm", { type = "string", default = "roundrobin" }),
    checks = defs.health_checker,
    hash_on = one_of_strings(HASH_SOURCES, "vars"),
    key = note("the chash key", { type = "string" }),
    scheme = note("the upstream's protocol", { enum = UPSTREAM_SCHEMES, default = "http" }),
    discovery_type = note("discovery type", { type = "string" }),
    discovery_args = obj({
        namespace_id = note("namespace id", { type = "string" }),
        group_name = note("group name", { type = "string" }),
    }),
    pass_host = note("how the Host header is passed", one_of_strings({ "pass", "node", "rewrite" }, "pass")),
    upstream_host = host,
    service_name = str(1, 256),
}, {
    oneOf = { needs("nodes"), needs("service_name", "discovery_type") },
    additionalProperties = false,
})
defs.upstream = upstream

-- The chash `key` for hash_on = vars, header, vars_combinations.
local HASH_VARS = {
    "uri", "server_name", "server_addr", "request_uri", "remote_port",
    "remote_addr", "query_string", "host", "hostname", "mqtt_client_id",
}
defs.upstream_hash_vars_schema = {
    type = "string",
    pattern = "^((" .. table.concat(HASH_VARS, "|") .. ")|arg_[0-9a-zA-z_-]+)$",
}
defs.upstream_hash_header_schema = { type = "string", pattern = [[^[a-zA-Z0-9-_]+$]] }
defs.upstream_hash_vars_combinations_schema = { type = "string" }

------------------------------------------------------------------------------------------------
-- Routes and services

local script_source = str(10, 102400)
local host_list = list(host, { minItems = 1, uniqueItems = true })
local websocket_flag = note("enable websocket for request", { type = "boolean" })

-- Every combination of a matcher (uri/uris) with something to run.
local route_targets = {}
for _, matcher in ipairs({ "uri", "uris" }) do
    for _, target in ipairs({ "plugins", "upstream", "upstream_id", "service_id" }) do
        route_targets[#route_targets + 1] = needs(target, matcher)
    end
end
route_targets[#route_targets + 1] = needs("script", "uri")
route_targets[#route_targets + 1] = needs("script", "uris")

defs.route = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    uri = str(1, 4096),
    uris = list(note("HTTP uri", { type = "string" }), { minItems = 1, uniqueItems = true }),
    priority = { type = "integer", default = 0 },
    methods = list(http_method, { uniqueItems = true }),
    host = host,
    hosts = host_list,
    remote_addr = client_addr,
    remote_addrs = list(client_addr, { minItems = 1, uniqueItems = true }),
    timeout = timeouts,
    vars = { type = "array" },
    filter_func = str(10, nil, { pattern = [[^function]] }),

    script = script_source,
    script_id = ident,

    plugins = opaque_plugins,
    plugin_config_id = ident,
    upstream = upstream,
    service_id = ident,
    upstream_id = ident,

    enable_websocket = websocket_flag,
    status = note("1 serves the route, 0 disables it", { type = "integer", enum = { 1, 0 }, default = 1 }),
}, {
    allOf = {
        { oneOf = { needs("uri"), needs("uris") } },
        exclusive("host", "hosts"),
        exclusive("remote_addr", "remote_addrs"),
    },
    anyOf = route_targets,
    ["not"] = { anyOf = { needs("script", "plugins"), needs("script", "plugin_config_id") } },
    additionalProperties = false,
})

defs.service = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    plugins = opaque_plugins,
    upstream = upstream,
    upstream_id = ident,
    script = script_source,
    enable_websocket = websocket_flag,
    hosts = host_list,
}, { additionalProperties = false })

------------------------------------------------------------------------------------------------
-- Consumers and their credentials

defs.consumer = obj({
    id = ident,
    username = str(1, 256, { pattern = [[^[a-zA-Z0-9_\-]+$]] }),
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    group_id = ident,
    plugins = opaque_plugins,
}, { required = { "username" }, additionalProperties = false })

-- One auth plugin's conf. The id may also be the full path `<consumer>/credentials/<id>`.
local CREDENTIAL_PATH = [[^[a-zA-Z0-9-_]+/credentials/[a-zA-Z0-9-_.]+$]]
defs.credential = obj({
    id = { oneOf = { ident, str(15, 128, { pattern = CREDENTIAL_PATH }) } },
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    plugins = { type = "object", maxProperties = 1 },
}, { additionalProperties = false })

defs.consumer_group = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    plugins = opaque_plugins,
}, { required = { "id", "plugins" }, additionalProperties = false })

------------------------------------------------------------------------------------------------
-- Other resources

-- graphql-limit-count's cost of a type or field, owned by a service.
local cost_args = list(str(1))
defs.graphql_cost_decoration = obj({
    id = ident,
    service_id = ident,
    field_path = note("a GraphQL type, or type.field[.field...], whose cost this sets", {
        type = "string",
        pattern = [[^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$]],
    }),
    add_value = note("own cost", num(0, 1)),
    add_arguments = cost_args,
    mul_value = note("children factor", num(0, 1)),
    mul_arguments = cost_args,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,
}, { required = { "field_path" }, additionalProperties = false })

local server_name = { type = "string", pattern = HOST_PATTERN }

defs.ssl = obj({
    id = ident,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    type = note(
        "server: a certificate clients see; client: one presented to upstreams",
        one_of_strings({ "server", "client" }, "server")
    ),
    cert = pem_cert,
    key = pem_key,
    sni = server_name,
    snis = list(server_name, { minItems = 1 }),
    certs = list(pem_cert),
    keys = list(pem_key),
    client = obj({
        ca = pem_cert,
        depth = { type = "integer", minimum = 0, default = 1 },
        skip_mtls_uri_regex = list(
            note("uri regex exempt from mTLS", { type = "string" }),
            { minItems = 1, uniqueItems = true }
        ),
    }, { required = { "ca" } }),
    status = note("1 serves the certificate, 0 disables it", { type = "integer", enum = { 1, 0 }, default = 1 }),
    ssl_protocols = note("TLS versions offered", list({ enum = { "TLSv1.1", "TLSv1.2", "TLSv1.3" } }, {
        maxItems = 3,
        uniqueItems = true,
    })),
}, {
    -- A server certificate needs a name to be served for; a client one does not.
    ["if"] = { properties = { type = { enum = { "server" } } } },
    ["then"] = { oneOf = { needs("sni", "key", "cert"), needs("snis", "key", "cert") } },
    ["else"] = needs("key", "cert"),
    additionalProperties = false,
})

defs.proto = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    content = str(1, 1048576),
}, { required = { "content" }, additionalProperties = false })

defs.global_rule = obj({
    id = ident,
    create_time = epoch,
    update_time = epoch,

    plugins = opaque_plugins,
}, { required = { "id", "plugins" }, additionalProperties = false })

defs.plugin_config = obj({
    id = ident,
    name = { type = "string" },
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    plugins = opaque_plugins,
}, { required = { "id", "plugins" }, additionalProperties = false })

-- xRPC protocol of a stream route, with its loggers.
local xrpc_logger = {
    properties = {
        name = { type = "string" },
        filter = note("logger filter rules", { type = "array" }),
        conf = note("logger plugin configuration", { type = "object" }),
    },
    dependencies = { name = { "conf" } },
    additionalProperties = false,
}
local xrpc = obj({
    name = { type = "string" },
    superior_id = ident,
    conf = note("protocol-specific configuration", { type = "object" }),
    logger = list(xrpc_logger),
}, { required = { "name" } })

defs.stream_route = obj({
    id = ident,
    name = title,
    desc = blurb,
    labels = label_map,
    create_time = epoch,
    update_time = epoch,

    remote_addr = client_addr,
    server_addr = note("server IP", { type = "string", anyOf = addr_forms }),
    server_port = note("server port", int(1, 65535)),
    sni = note("server name indication", { type = "string", pattern = HOST_PATTERN }),
    upstream = upstream,
    upstream_id = ident,
    service_id = ident,
    plugins = opaque_plugins,
    protocol = xrpc,
}, { additionalProperties = false })

-- The node's `plugins:` list as /plugins/reload reads it. As in APISIX, `additionalProperties =
-- false` is listed among the properties (so it names a property that must be absent), not next
-- to them.
defs.plugins = list(obj({
    name = str(1),
    stream = { type = "boolean" },
    additionalProperties = false,
}, { required = { "name" } }))

------------------------------------------------------------------------------------------------
-- `_meta`: added by the loader to every plugin's schema as `properties._meta`. The `$comment`
-- marks a schema that already got it (tools and plugins test for that mark).

defs.plugin_injected_schema = {
    ["$comment"] = "this is a mark for our injected plugin schema",
    _meta = obj({
        disable = { type = "boolean" },
        error_response = { oneOf = { { type = "string" }, { type = "object" } } },
        -- These two descriptions are APISIX's words: the schema API shows them and tools
        -- compare them.
        priority = note("priority of plugins by customized order", { type = "integer" }),
        filter = note("filter determines whether the plugin needs to be executed at runtime", {
            type = "array",
        }),
        pre_function = note("Lua source of function(conf, ctx), run before each phase", { type = "string" }),
    }, { additionalProperties = false }),
}

return defs
