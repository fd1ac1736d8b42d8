# The ngx request API through moongate test: var, req.get_uri_args, headers, method, body.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('warn');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("no_error_log", "[error]")
        if !defined $block->no_error_log && !defined $block->error_log;
});

run_tests;

__DATA__

=== TEST 1: ngx.var reads the uri, args, host and headers
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.var.uri, " ", ngx.var.args, " ", ngx.var.arg_b)
            ngx.say(ngx.var.host, " ", ngx.var.http_x_custom)
            ngx.say(ngx.var.request_method, " ", ngx.var.server_port)
        }
    }
--- request
GET /t/x?a=1&b=two
--- more_headers
Host: example.com
X-Custom: custom value
--- response_body eval
"/t/x a=1&b=two two\nexample.com custom value\nGET $ENV{TEST_NGINX_SERVER_PORT}\n"



=== TEST 2: ngx.req.get_uri_args decodes and collects repeated names
--- config
    location /t {
        content_by_lua_block {
            local args = ngx.req.get_uri_args()
            ngx.say(args.a, " ", table.concat(args.b, ","), " ", tostring(args.flag))
        }
    }
--- request
GET /t?a=hello%20world&b=1&b=2&flag
--- response_body
hello world 1,2 true



=== TEST 3: ngx.req.get_headers lower-cases names
--- config
    location /t {
        content_by_lua_block {
            local h = ngx.req.get_headers()
            ngx.say(h["x-one"], " ", h.x_one, " ", h["X-One"])
        }
    }
--- request
GET /t
--- more_headers
X-One: 1
--- response_body
1 1 1



=== TEST 4: the body of a POST, read in Lua
--- config
    location /t {
        content_by_lua_block {
            ngx.req.read_body()
            local body = ngx.req.get_body_data()
            ngx.say(ngx.req.get_method(), " ", #body, " ", body)
        }
    }
--- request
POST /t
{"k": "v"}
--- response_body
POST 10 {"k": "v"}



=== TEST 5: ngx.req.set_header in rewrite is seen by content
--- config
    location /t {
        rewrite_by_lua_block {
            ngx.req.set_header("X-Added", "by rewrite")
        }
        content_by_lua_block {
            ngx.say(ngx.var.http_x_added)
        }
    }
--- request
GET /t
--- response_body
by rewrite



=== TEST 6: ngx.ctx is shared by the phases of one request only
--- config
    location /t {
        access_by_lua_block {
            ngx.ctx.seen = (ngx.ctx.seen or 0) + 1
        }
        content_by_lua_block {
            ngx.say("seen ", ngx.ctx.seen)
        }
    }
--- request eval
["GET /t", "GET /t"]
--- response_body eval
["seen 1\n", "seen 1\n"]
