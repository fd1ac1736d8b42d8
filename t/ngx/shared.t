# ngx.shared dictionaries through moongate test: set/get/incr/add, expiry, and state that
# lives across the requests of a block and the blocks of a file.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('warn');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !defined $block->request;
    $block->set_value("no_error_log", "[error]");
});

run_tests;

__DATA__

=== TEST 1: set, get, incr, add
--- config
    location /t {
        content_by_lua_block {
            local d = ngx.shared["plugin-limit-count"]
            d:flush_all()
            assert(d:set("k", 1))
            ngx.say(d:get("k"))
            ngx.say((d:incr("k", 5)))
            local ok, err = d:add("k", 9)
            ngx.say(tostring(ok), " ", err)
            ngx.say((d:incr("missing", 1, 10)))
        }
    }
--- response_body
1
6
false exists
11



=== TEST 2: values expire after their ttl
--- config
    location /t {
        content_by_lua_block {
            local d = ngx.shared["plugin-limit-count"]
            d:set("short", "v", 0.1)
            ngx.say(d:get("short"))
            ngx.sleep(0.2)
            ngx.say(tostring(d:get("short")))
        }
    }
--- response_body
v
nil



=== TEST 3: a counter grows across the requests of one block
--- config
    location /t {
        content_by_lua_block {
            ngx.say((ngx.shared["plugin-limit-count"]:incr("hits", 1, 0)))
        }
    }
--- request eval
["GET /t", "GET /t", "GET /t"]
--- response_body eval
["1\n", "2\n", "3\n"]



=== TEST 4: an unknown dictionary is nil
--- config
    location /t {
        content_by_lua_block {
            ngx.say(tostring(ngx.shared["no-such-dict"]))
        }
    }
--- response_body
nil



=== TEST 5: APISIX's default dictionaries exist, proxy-cache's memory_cache among them
--- config
    location /t {
        content_by_lua_block {
            for _, name in ipairs({"plugin-api-breaker", "memory_cache", "internal-status"}) do
                local d = ngx.shared[name]
                ngx.say(name, " ", d ~= nil and d:set("k", "v") or "missing")
            end
        }
    }
--- response_body
plugin-api-breaker true
memory_cache true
internal-status true
