# Self-tests of `moongate test`: every block here must pass.
use Test::Nginx::Socket::Lua;

repeat_each(2);
no_long_string();
log_level('info');

our $Greeting = "hello";

add_block_preprocessor(sub {
    my $block = shift;
    if (!defined $block->request) {
        $block->set_value("request", "GET /t");
    }
});

run_tests();

__DATA__

=== TEST 1: content_by_lua_block answers, the preprocessor supplied the request
--- config
    location /t {
        content_by_lua_block {
            ngx.say("hello from ", ngx.var.uri)
        }
    }
--- response_body
hello from /t
--- no_error_log
[error]



=== TEST 2: eval sections: a Perl list of requests, each with its own body and status
--- config
    location /t {
        content_by_lua_block {
            if ngx.var.arg_code then
                ngx.status = tonumber(ngx.var.arg_code)
            end
            ngx.print(string.rep("a", tonumber(ngx.var.arg_n or 1)))
        }
    }
--- request eval
["GET /t?n=3", "GET /t?n=2&code=201"]
--- error_code eval
[200, 201]
--- response_body eval
["a" x 3, "aa"]



=== TEST 3: qr// and concatenation in eval, a package variable of the prologue
--- config
    location = /t {
        content_by_lua_block { ngx.say("hello", " world ", 42) }
    }
--- response_body eval
qr/^\Q$::Greeting\E world \d+$/
--- response_body_like chomp
^hello world
--- response_body_unlike
goodbye



=== TEST 4: return with a status and text, headers set with more_set_headers
--- config
    location /r {
        more_set_headers "X-Test: yes";
        return 403 "forbidden at $uri";
    }
--- request
GET /r/x
--- error_code: 403
--- response_body chomp
forbidden at /r/x
--- response_headers
X-Test: yes
!X-Missing



=== TEST 5: error_log and grep_error_log read the lines this block logged
--- config
    location /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "counter=", 1)
            ngx.log(ngx.WARN, "counter=", 2)
            ngx.say("ok")
        }
    }
--- response_body
ok
--- error_log
counter=1
--- grep_error_log eval
qr/counter=\d/
--- grep_error_log_out
counter=1
counter=2



=== TEST 6: pipelined requests share one connection, more_headers reach Lua
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.var.http_x_who or "nobody")
        }
    }
--- pipelined_requests eval
["GET /t", "GET /t"]
--- more_headers
X-Who: me
--- response_body eval
["me\n", "me\n"]



=== TEST 7: a request body and headers of the request, chomp on the expectation
--- config
    location /t {
        content_by_lua_block {
            ngx.req.read_body()
            ngx.print(ngx.req.get_method(), " ", ngx.req.get_body_data())
        }
    }
--- request
POST /t
name=value
--- response_body chomp
POST name=value



=== TEST 8: log_by_lua runs after the answer, and wait gives it time
--- config
    location /t {
        content_by_lua_block { ngx.say("logged") }
        log_by_lua_block { ngx.log(ngx.WARN, "log phase ran for ", ngx.var.uri) }
    }
--- response_body
logged
--- wait: 0.1
--- error_log
log phase ran for /t



=== TEST 9: access_log finds the request's line
--- config
    location /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t?from=access-log-test
--- response_body
ok
--- access_log
GET /t?from=access-log-test HTTP/1.1



=== TEST 10: a harness section the runner does not honour skips the block, naming it
--- stream_request
hello
--- response_body
never checked



=== TEST 11: an nginx directive without a translation skips the block
--- config
    location /t {
        echo "hello";
    }
--- response_body
hello



=== TEST 12: SKIP skips
--- SKIP
--- config
    location /t { return 200 "x"; }
--- response_body
y



=== TEST 13: error_code_like: the status matches a pattern
--- config
    location /t {
        content_by_lua_block { ngx.exit(201) }
    }
--- error_code_like: ^20[01]$



=== TEST 14: main_config env sets the gateway's environment
--- main_config
env MOONGATE_RUNNER_ENV_PROBE=from-main-config;
--- config
    location /t {
        content_by_lua_block { ngx.say(os.getenv("MOONGATE_RUNNER_ENV_PROBE")) }
    }
--- response_body
from-main-config



=== TEST 15: a section no harness reads is ignored, as Test::Nginx ignores it
--- response_args
auth: never read
--- config
    location /t {
        content_by_lua_block { ngx.say(os.getenv("MOONGATE_RUNNER_ENV_PROBE") or "unset") }
    }
--- response_body
unset



=== TEST 16: a main_config directive other than env skips the block, naming it
--- main_config
worker_rlimit_nofile 20480;
--- config
    location /t { return 200 "x"; }
--- response_body
y



=== TEST 17: realip directives inside a location set the client address, as nginx's realip module does there
--- config
    location /t {
        real_ip_header X-Real-IP;
        set_real_ip_from 127.0.0.1;
        content_by_lua_block { ngx.say(ngx.var.remote_addr, " ", ngx.var.realip_remote_addr) }
    }
--- more_headers
X-Real-IP: 10.9.8.7
--- response_body
10.9.8.7 127.0.0.1
