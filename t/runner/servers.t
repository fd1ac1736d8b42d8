# Self-tests of `moongate test`: http_config mock servers, proxy_pass to them, what carries
# across the blocks of a file (module state, not shared dicts), and a yaml_config change
# restarting the gateway.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('info');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !defined $block->request;
    $block->set_value("http_config", <<'_EOC_') if !defined $block->http_config;
    server {
        listen 1970;
        location /mock {
            content_by_lua_block {
                ngx.say("mock saw ", ngx.var.uri, ngx.var.args and (" " .. ngx.var.args) or "", " on ", ngx.var.server_port)
            }
        }
        location = /log {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.log(ngx.WARN, "mock received: ", ngx.req.get_body_data())
                ngx.say("logged")
            }
        }
    }
_EOC_
});

run_tests;

__DATA__

=== TEST 1: proxy_pass reaches the mock server of http_config
--- config
    location /t {
        proxy_pass http://127.0.0.1:1970/mock;
    }
--- request
GET /t/abc
--- response_body
mock saw /mock/abc on 1970



=== TEST 2: a mock server's log lines count for error_log
--- config
    location /t {
        content_by_lua_block {
            local sock = ngx.socket.tcp()
            assert(sock:connect("127.0.0.1", 1970))
            assert(sock:send("POST /log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"))
            local line = sock:receive("*l")
            ngx.say(line)
        }
    }
--- response_body
HTTP/1.1 200 OK
--- error_log
mock received: hello



=== TEST 3: module state and a shared dict set in one block ...
--- config
    location /t {
        content_by_lua_block {
            ngx.shared["internal-status"]:set("carried", "across blocks")
            package.loaded["moongate-runner-self-test"] = "module state"
            ngx.say("set")
        }
    }
--- response_body
set



=== TEST 4: ... the next block (same gateway) keeps module state; the dict is emptied, as the nginx restart between Test::Nginx blocks empties it
--- config
    location /t {
        content_by_lua_block {
            ngx.say(package.loaded["moongate-runner-self-test"])
            ngx.say(ngx.shared["internal-status"]:get("carried") or "emptied")
        }
    }
--- response_body
module state
emptied



=== TEST 5: proxy_pass with a query: the client's arguments follow it
--- config
    location /q {
        proxy_pass http://127.0.0.1:1970/mock/args?fixed=1;
    }
--- request
GET /q?from=client
--- response_body
mock saw /mock/args fixed=1&from=client on 1970



=== TEST 6: a yaml_config change restarts the gateway, so the dict is empty again
--- yaml_config
nginx_config:
  worker_processes: 1
moongate:
  lua_phase_timeout: 30s
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.shared["internal-status"]:get("carried") or "fresh")
        }
    }
--- response_body
fresh
