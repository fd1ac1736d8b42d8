-- apisix.schema_def: the schemas of APISIX's resources (route, service, upstream, consumer,
-- credential, ssl, global_rule, plugin_config, consumer_group, stream_route, proto) and the
-- pieces plugins borrow from them (id_schema, host_def, ip_def, uri_def, method_schema,
-- health checkers, the `_meta` schema injected into every plugin schema ...).
--
-- Names, shapes, patterns, bounds and defaults are APISIX's, because plugins reuse these tables
-- and users' confs are judged by them; property order inside each table follows APISIX's too, so
-- a conf with several faults reports the same one first. Read through `core.schema.X`.

local _M = { version = 0.5 }

-- `plugins` of a resource: each entry is checked by its own plugin, not here.
local plugins_schema = { type = "object" }

-- A resource id: a short string of safe characters, or a positive integer.
local id_schema = {
    anyOf = {
        { type = "string", minLength = 1, maxLength = 64, pattern = [[^[a-zA-Z0-9-_.]+$]] },
        { type = "integer", minimum = 1 },
    },
}
_M.id_schema = id_schema

_M.anonymous_consumer_schema = { type = "string", minLength = 1 }

-- The `realm` of auth plugins' WWW-Authenticate header: printable ASCII without `"` and `\`.
function _M.get_realm_schema(default_val)
    return {
        type = "string",
        pattern = "^[\x20-\x21\x23-\x5B\\]-\x7E]+$",
        default = default_val,
        minLength = 1,
        maxLength = 128,
    }
end

-- A host: `*`, or a name/address with an optional leading `*` wildcard.
local host_def_pat = "^\\*$|^\\*?[0-9a-zA-Z-._\\[\\]:]+$"
local host_def = { type = "string", pattern = host_def_pat }
_M.host_def = host_def

-- IPv4 and IPv6 addresses and CIDRs. The IPv6 CIDR pattern is deliberately loose (a precise
-- one is unreadable); the address forms are checked by the address parser.
local octet = "([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])"
local ipv4_pat = octet .. [[\.]] .. octet .. [[\.]] .. octet .. [[\.]] .. octet
local ipv6_pat = "([a-fA-F0-9]{0,4}:){1,8}(:[a-fA-F0-9]{0,4}){0,8}([a-fA-F0-9]{0,4})?"
local ip_def = {
    { title = "IPv4", type = "string", format = "ipv4" },
    { title = "IPv4/CIDR", type = "string", pattern = "^" .. ipv4_pat .. "/([12]?[0-9]|3[0-2])$" },
    { title = "IPv6", type = "string", format = "ipv6" },
    { title = "IPv6/CIDR", type = "string", pattern = "^" .. ipv6_pat .. "/[0-9]{1,3}$" },
}
_M.ip_def = ip_def

-- An absolute URL: scheme://host-or-[v6][:port]...
_M.uri_def = {
    type = "string",
    pattern = [=[^[^\/]+:\/\/([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?]=],
}

local timestamp_def = { type = "integer" }

local remote_addr_def = { description = "client IP", type = "string", anyOf = ip_def }

local label_value_def = {
    description = "value of label",
    type = "string",
    pattern = [[^\S+$]],
    maxLength = 256,
    minLength = 1,
}
_M.label_value_def = label_value_def

local labels_def = {
    description = "key/value pairs to specify attributes",
    type = "object",
    patternProperties = { [".*"] = label_value_def },
}

local rule_name_def = { type = "string", maxLength = 256, minLength = 1 }

local desc_def = { type = "string", maxLength = 256 }

-- connect/send/read timeouts in seconds, all three required.
local timeout_def = {
    type = "object",
    properties = {
        connect = { type = "number", exclusiveMinimum = 0 },
        send = { type = "number", exclusiveMinimum = 0 },
        read = { type = "number", exclusiveMinimum = 0 },
    },
    required = { "connect", "send", "read" },
}
_M.timeout_def = timeout_def

local method_schema = {
    description = "HTTP method",
    type = "string",
    enum = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
             "PURGE" },
}
_M.method_schema = method_schema

-- `plugin_disable_schema`: what APISIX 2.x gave plugins before `_meta.disable`; kept for plugins
-- written against it.
_M.plugin_disable_schema = { disable = { type = "boolean" } }

-- An HTTP status list of a health checker.
local function statuses(default)
    return {
        type = "array",
        minItems = 1,
        items = { type = "integer", minimum = 200, maximum = 599 },
        uniqueItems = true,
        default = default,
    }
end

local function counter(min, default)
    return { type = "integer", minimum = min, maximum = 254, default = default }
end

local health_checker_active = {
    type = "object",
    properties = {
        type = { type = "string", enum = { "http", "https", "tcp" }, default = "http" },
        timeout = { type = "number", default = 1 },
        concurrency = { type = "integer", default = 10 },
        host = host_def,
        port = { type = "integer", minimum = 1, maximum = 65535 },
        http_method = { type = "string", enum = method_schema.enum, default = "GET" },
        http_path = { type = "string", default = "/" },
        http_req_body = { type = "string", default = "" },
        https_verify_certificate = { type = "boolean", default = true },
        healthy = {
            type = "object",
            properties = {
                interval = { type = "integer", minimum = 1, default = 1 },
                http_statuses = statuses({ 200, 302 }),
                successes = counter(1, 2),
            },
        },
        unhealthy = {
            type = "object",
            properties = {
                interval = { type = "integer", minimum = 1, default = 1 },
                http_statuses = statuses({ 429, 404, 500, 501, 502, 503, 504, 505 }),
                http_failures = counter(1, 5),
                tcp_failures = counter(1, 2),
                timeouts = counter(1, 3),
            },
        },
        req_headers = {
            type = "array",
            minItems = 1,
            items = { type = "string", uniqueItems = true },
        },
    },
}
_M.health_checker_active = health_checker_active

local health_checker_passive = {
    type = "object",
    properties = {
        type = { type = "string", enum = { "http", "https", "tcp" }, default = "http" },
        healthy = {
            type = "object",
            properties = {
                http_statuses = statuses({ 200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                           300, 301, 302, 303, 304, 305, 306, 307, 308 }),
                successes = counter(0, 5),
            },
        },
        unhealthy = {
            type = "object",
            properties = {
                http_statuses = statuses({ 429, 500, 503 }),
                tcp_failures = counter(0, 2),
                timeouts = counter(0, 7),
                http_failures = counter(0, 5),
            },
        },
    },
}
_M.health_checker_passive = health_checker_passive

-- `checks`: active checks, optionally with passive ones (passive alone is refused).
local health_checker = {
    type = "object",
    properties = {
        active = health_checker_active,
        passive = health_checker_passive,
    },
    anyOf = {
        { required = { "active" } },
        { required = { "active", "passive" } },
    },
}
_M.health_checker = health_checker

local port_def = { description = "port of node", type = "integer", minimum = 1, maximum = 65535 }
local weight_def = { description = "weight of node", type = "integer", minimum = 0 }

-- `nodes`: a map "host:port" -> weight, or a list of node objects.
local nodes_schema = {
    anyOf = {
        {
            type = "object",
            patternProperties = { [".*"] = weight_def },
        },
        {
            type = "array",
            items = {
                type = "object",
                properties = {
                    host = host_def,
                    port = port_def,
                    weight = weight_def,
                    priority = { description = "priority of node", type = "integer", default = 0 },
                    metadata = { description = "metadata of node", type = "object" },
                },
                required = { "host", "weight" },
            },
        },
    },
}

-- Nodes a discovery backend returns (the port may be missing, the host may be a name).
_M.discovery_nodes = {
    type = "array",
    items = {
        type = "object",
        properties = {
            host = { description = "domain or ip" },
            port = port_def,
            weight = weight_def,
            priority = { description = "priority of node", type = "integer" },
            metadata = { description = "metadata of node", type = "object" },
        },
        required = { "host", "weight" },
    },
}

local certificate_scheme = { type = "string", minLength = 128, maxLength = 64 * 1024 }
local private_key_schema = { type = "string", minLength = 64, maxLength = 64 * 1024 }

local upstream_schema = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        nodes = nodes_schema,
        retries = { type = "integer", minimum = 0 },
        retry_timeout = { type = "number", minimum = 0 },
        timeout = timeout_def,
        tls = {
            type = "object",
            properties = {
                client_cert_id = id_schema,
                client_cert = certificate_scheme,
                client_key = private_key_schema,
                verify = {
                    type = "boolean",
                    description = "verify the upstream's certificate (kafka upstreams)",
                    default = false,
                },
            },
            dependencies = {
                client_cert = { required = { "client_key" } },
                client_key = { required = { "client_cert" } },
                client_cert_id = { ["not"] = { required = { "client_cert", "client_key" } } },
            },
        },
        keepalive_pool = {
            type = "object",
            properties = {
                size = { type = "integer", default = 320, minimum = 1 },
                idle_timeout = { type = "number", default = 60, minimum = 0 },
                requests = { type = "integer", default = 1000, minimum = 1 },
            },
        },
        type = { description = "load balancing algorithm", type = "string", default = "roundrobin" },
        checks = health_checker,
        hash_on = {
            type = "string",
            default = "vars",
            enum = { "vars", "header", "cookie", "consumer", "vars_combinations" },
        },
        key = { description = "the chash key", type = "string" },
        scheme = {
            default = "http",
            enum = { "grpc", "grpcs", "http", "https", "tcp", "tls", "udp", "kafka" },
            description = "the upstream's protocol",
        },
        discovery_type = { description = "discovery type", type = "string" },
        discovery_args = {
            type = "object",
            properties = {
                namespace_id = { description = "namespace id", type = "string" },
                group_name = { description = "group name", type = "string" },
            },
        },
        pass_host = {
            description = "how the Host header is passed",
            type = "string",
            enum = { "pass", "node", "rewrite" },
            default = "pass",
        },
        upstream_host = host_def,
        service_name = { type = "string", maxLength = 256, minLength = 1 },
    },
    oneOf = {
        { required = { "nodes" } },
        { required = { "service_name", "discovery_type" } },
    },
    additionalProperties = false,
}
_M.upstream = upstream_schema

-- chash `key` forms for hash_on = vars / header / vars_combinations.
_M.upstream_hash_vars_schema = {
    type = "string",
    pattern = [[^((uri|server_name|server_addr|request_uri|remote_port]]
              .. [[|remote_addr|query_string|host|hostname|mqtt_client_id)]]
              .. [[|arg_[0-9a-zA-z_-]+)$]],
}
_M.upstream_hash_header_schema = { type = "string", pattern = [[^[a-zA-Z0-9-_]+$]] }
_M.upstream_hash_vars_combinations_schema = { type = "string" }

local script_def = { type = "string", minLength = 10, maxLength = 102400 }

local hosts_def = { type = "array", items = host_def, minItems = 1, uniqueItems = true }

-- "exactly one of a and b, or neither"
local function at_most_one_of(a, b)
    return {
        oneOf = {
            { ["not"] = { anyOf = { { required = { a } }, { required = { b } } } } },
            { required = { a } },
            { required = { b } },
        },
    }
end

_M.route = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        uri = { type = "string", minLength = 1, maxLength = 4096 },
        uris = {
            type = "array",
            items = { description = "HTTP uri", type = "string" },
            minItems = 1,
            uniqueItems = true,
        },
        priority = { type = "integer", default = 0 },
        methods = { type = "array", items = method_schema, uniqueItems = true },
        host = host_def,
        hosts = hosts_def,
        remote_addr = remote_addr_def,
        remote_addrs = {
            type = "array",
            items = remote_addr_def,
            minItems = 1,
            uniqueItems = true,
        },
        timeout = timeout_def,
        vars = { type = "array" },
        filter_func = { type = "string", minLength = 10, pattern = [[^function]] },

        script = script_def,
        script_id = id_schema,

        plugins = plugins_schema,
        plugin_config_id = id_schema,
        upstream = upstream_schema,
        service_id = id_schema,
        upstream_id = id_schema,

        enable_websocket = { description = "enable websocket for request", type = "boolean" },
        status = {
            description = "1 serves the route, 0 disables it",
            type = "integer",
            enum = { 1, 0 },
            default = 1,
        },
    },
    allOf = {
        { oneOf = { { required = { "uri" } }, { required = { "uris" } } } },
        at_most_one_of("host", "hosts"),
        at_most_one_of("remote_addr", "remote_addrs"),
    },
    anyOf = {
        { required = { "plugins", "uri" } },
        { required = { "upstream", "uri" } },
        { required = { "upstream_id", "uri" } },
        { required = { "service_id", "uri" } },
        { required = { "plugins", "uris" } },
        { required = { "upstream", "uris" } },
        { required = { "upstream_id", "uris" } },
        { required = { "service_id", "uris" } },
        { required = { "script", "uri" } },
        { required = { "script", "uris" } },
    },
    ["not"] = {
        anyOf = {
            { required = { "script", "plugins" } },
            { required = { "script", "plugin_config_id" } },
        },
    },
    additionalProperties = false,
}

_M.service = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        plugins = plugins_schema,
        upstream = upstream_schema,
        upstream_id = id_schema,
        script = script_def,
        enable_websocket = { description = "enable websocket for request", type = "boolean" },
        hosts = hosts_def,
    },
    additionalProperties = false,
}

_M.consumer = {
    type = "object",
    properties = {
        id = id_schema,
        username = {
            type = "string",
            minLength = 1,
            maxLength = rule_name_def.maxLength,
            pattern = [[^[a-zA-Z0-9_\-]+$]],
        },
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        group_id = id_schema,
        plugins = plugins_schema,
    },
    required = { "username" },
    additionalProperties = false,
}

-- A consumer's credential: one auth plugin's conf. Its id may be the full key path
-- `<consumer>/credentials/<id>`.
_M.credential = {
    type = "object",
    properties = {
        id = {
            oneOf = {
                id_schema,
                {
                    type = "string",
                    minLength = 15,
                    maxLength = 128,
                    pattern = [[^[a-zA-Z0-9-_]+/credentials/[a-zA-Z0-9-_.]+$]],
                },
            },
        },
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        plugins = { type = "object", maxProperties = 1 },
    },
    additionalProperties = false,
}

-- graphql-limit-count's per-field costs, owned by a service.
_M.graphql_cost_decoration = {
    type = "object",
    properties = {
        id = id_schema,
        service_id = id_schema,
        field_path = {
            type = "string",
            pattern = [[^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$]],
            description = "a GraphQL type, or type.field[.field...], whose cost this sets",
        },
        add_value = { type = "number", minimum = 0, default = 1, description = "own cost" },
        add_arguments = { type = "array", items = { type = "string", minLength = 1 } },
        mul_value = { type = "number", minimum = 0, default = 1, description = "children factor" },
        mul_arguments = { type = "array", items = { type = "string", minLength = 1 } },
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,
    },
    required = { "field_path" },
    additionalProperties = false,
}

local sni_def = { type = "string", pattern = host_def_pat }

_M.ssl = {
    type = "object",
    properties = {
        id = id_schema,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        type = {
            description = "server: a certificate clients see; client: one presented to upstreams",
            type = "string",
            default = "server",
            enum = { "server", "client" },
        },
        cert = certificate_scheme,
        key = private_key_schema,
        sni = sni_def,
        snis = { type = "array", items = sni_def, minItems = 1 },
        certs = { type = "array", items = certificate_scheme },
        keys = { type = "array", items = private_key_schema },
        client = {
            type = "object",
            properties = {
                ca = certificate_scheme,
                depth = { type = "integer", minimum = 0, default = 1 },
                skip_mtls_uri_regex = {
                    type = "array",
                    minItems = 1,
                    uniqueItems = true,
                    items = { description = "uri regex exempt from mTLS", type = "string" },
                },
            },
            required = { "ca" },
        },
        status = {
            description = "1 serves the certificate, 0 disables it",
            type = "integer",
            enum = { 1, 0 },
            default = 1,
        },
        ssl_protocols = {
            description = "TLS versions offered",
            type = "array",
            maxItems = 3,
            uniqueItems = true,
            items = { enum = { "TLSv1.1", "TLSv1.2", "TLSv1.3" } },
        },
    },
    ["if"] = { properties = { type = { enum = { "server" } } } },
    ["then"] = {
        oneOf = {
            { required = { "sni", "key", "cert" } },
            { required = { "snis", "key", "cert" } },
        },
    },
    ["else"] = { required = { "key", "cert" } },
    additionalProperties = false,
}

_M.proto = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        content = { type = "string", minLength = 1, maxLength = 1024 * 1024 },
    },
    required = { "content" },
    additionalProperties = false,
}

_M.global_rule = {
    type = "object",
    properties = {
        id = id_schema,
        create_time = timestamp_def,
        update_time = timestamp_def,

        plugins = plugins_schema,
    },
    required = { "id", "plugins" },
    additionalProperties = false,
}

local xrpc_protocol_schema = {
    type = "object",
    properties = {
        name = { type = "string" },
        superior_id = id_schema,
        conf = { description = "protocol-specific configuration", type = "object" },
        logger = {
            type = "array",
            items = {
                properties = {
                    name = { type = "string" },
                    filter = { description = "logger filter rules", type = "array" },
                    conf = { description = "logger plugin configuration", type = "object" },
                },
                dependencies = { name = { "conf" } },
                additionalProperties = false,
            },
        },
    },
    required = { "name" },
}

_M.stream_route = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        remote_addr = remote_addr_def,
        server_addr = { description = "server IP", type = "string", anyOf = ip_def },
        server_port = { description = "server port", type = "integer", minimum = 1,
                        maximum = 65535 },
        sni = { description = "server name indication", type = "string", pattern = host_def_pat },
        upstream = upstream_schema,
        upstream_id = id_schema,
        service_id = id_schema,
        plugins = plugins_schema,
        protocol = xrpc_protocol_schema,
    },
    additionalProperties = false,
}

-- The node's `plugins:` list as the Admin API's /plugins/reload reads it. As in APISIX,
-- `additionalProperties = false` sits among the properties (a property of that name that must
-- be absent), not beside them.
_M.plugins = {
    type = "array",
    items = {
        type = "object",
        properties = {
            name = { type = "string", minLength = 1 },
            stream = { type = "boolean" },
            additionalProperties = false,
        },
        required = { "name" },
    },
}

_M.plugin_config = {
    type = "object",
    properties = {
        id = id_schema,
        name = { type = "string" },
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        plugins = plugins_schema,
    },
    required = { "id", "plugins" },
    additionalProperties = false,
}

_M.consumer_group = {
    type = "object",
    properties = {
        id = id_schema,
        name = rule_name_def,
        desc = desc_def,
        labels = labels_def,
        create_time = timestamp_def,
        update_time = timestamp_def,

        plugins = plugins_schema,
    },
    required = { "id", "plugins" },
    additionalProperties = false,
}

-- What the loader adds to every plugin's schema as `properties._meta`; `$comment` marks a
-- schema that already has it (APISIX plugins and tools test that mark).
_M.plugin_injected_schema = {
    ["$comment"] = "this is a mark for our injected plugin schema",
    _meta = {
        type = "object",
        properties = {
            disable = { type = "boolean" },
            error_response = { oneOf = { { type = "string" }, { type = "object" } } },
            priority = {
                description = "runs the plugin at this priority on this resource",
                type = "integer",
            },
            filter = {
                description = "lua-resty-expr rules deciding whether the plugin runs",
                type = "array",
            },
            pre_function = {
                description = "Lua source of function(conf, ctx), run before each phase",
                type = "string",
            },
        },
        additionalProperties = false,
    },
}

return _M
