# Self-test of `moongate test`: under t::APISIX a block that says nothing about the error log
# asserts there is no [error] line, so this block MUST be reported as `not ok`.
use t::APISIX 'no_plan';

run_tests;

__DATA__

=== TEST 1: an [error] line fails a block without log sections
--- config
    location /t {
        content_by_lua_block {
            ngx.log(ngx.ERR, "an error nobody asked about")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
