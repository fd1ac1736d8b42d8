# Self-tests of `moongate test`: every block here MUST be reported as `not ok`.
# tests/t_suites.rs runs this file and checks that each block failed, for the reason it names.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('info');

run_tests();

__DATA__

=== TEST 1: wrong body
--- config
    location /t {
        content_by_lua_block { ngx.say("actual") }
    }
--- request
GET /t
--- response_body
expected



=== TEST 2: wrong status
--- config
    location /t {
        content_by_lua_block { ngx.exit(404) }
    }
--- request
GET /t
--- error_code: 200



=== TEST 3: an unexpected [error] line
--- config
    location /t {
        content_by_lua_block {
            ngx.log(ngx.ERR, "something broke")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
[error]



=== TEST 4: an expected log line that never comes
--- config
    location /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- error_log
this line is never logged



=== TEST 5: a header that is absent
--- config
    location /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_headers
X-Never: 1



=== TEST 6: the second of two eval requests differs
--- config
    location /t {
        content_by_lua_block { ngx.print(ngx.var.arg_v) }
    }
--- request eval
["GET /t?v=a", "GET /t?v=b"]
--- response_body eval
["a", "a"]



=== TEST 7: a Lua error is a 500, not the expected body
--- config
    location /t {
        content_by_lua_block { error("boom") }
    }
--- request
GET /t
--- response_body
fine



=== TEST 8: an access log line that is not there
--- config
    location /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- access_log
GET /never-requested



=== TEST 9: a status outside the error_code_like pattern
--- config
    location /t {
        content_by_lua_block { ngx.exit(404) }
    }
--- request
GET /t
--- error_code_like: ^2\d\d$
