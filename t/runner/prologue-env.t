# Self-test of `moongate test`: variables the Perl prologue sets (`BEGIN { $ENV{X} = ... }`,
# how .t files hand values to nginx) reach the gateway's Lua, as nginx inherits them.
BEGIN {
    $ENV{T_PROLOGUE_PLAIN} = "plain value";
    $ENV{T_PROLOGUE_JSON} = '{"k":"v"}';
}

use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('warn');

run_tests;

__DATA__

=== TEST 1: both variables are seen by os.getenv
--- config
    location /t {
        content_by_lua_block {
            ngx.say(os.getenv("T_PROLOGUE_PLAIN"))
            ngx.say(os.getenv("T_PROLOGUE_JSON"))
            ngx.say(tostring(os.getenv("T_PROLOGUE_NEVER_SET")))
        }
    }
--- request
GET /t
--- response_body
plain value
{"k":"v"}
nil
