# resty.cookie (moongate's own): parsing the Cookie header, get/get_all errors, Set-Cookie.
use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('warn');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !defined $block->request;
    $block->set_value("no_error_log", "[error]")
        if !defined $block->no_error_log && !defined $block->error_log;
});

run_tests;

__DATA__

=== TEST 1: cookies are parsed with spaces trimmed; the first of a repeated name wins
--- config
    location /t {
        content_by_lua_block {
            local ck = require("resty.cookie")
            local cookie = assert(ck:new())
            ngx.say(cookie:get("lang"), " ", cookie:get("session"), " ", cookie:get("dup"), " ",
                    tostring(cookie:get("missing")), " [", cookie:get("empty"), "]")
            local all = cookie:get_all()
            local keys = {}
            for k in pairs(all) do keys[#keys + 1] = k end
            table.sort(keys)
            ngx.say(table.concat(keys, ","), " ", cookie:get_cookie_size())
        }
    }
--- more_headers
Cookie: lang=en-US;  session=abc=def ; dup=1; dup=2; empty=; novalue
--- response_body
en-US abc=def 1 nil []
dup,empty,lang,session 60



=== TEST 2: without a Cookie header get and get_all report it
--- config
    location /t {
        content_by_lua_block {
            local cookie = require("resty.cookie"):new()
            ngx.say(cookie:get("lang"))
            ngx.say(cookie:get_all())
        }
    }
--- response_body
nilno cookie found in the current request
nilno cookie found in the current request



=== TEST 3: set adds Set-Cookie headers with their attributes, once per cookie text
--- config
    location /t {
        content_by_lua_block {
            local cookie = require("resty.cookie"):new()
            assert(cookie:set({key = "Name", value = "Bob", path = "/", domain = "example.com",
                               secure = true, httponly = true, samesite = "Strict",
                               expires = "Wed, 09 Jun 2021 10:18:14 GMT", max_age = 50,
                               extension = "a4334aebaec"}))
            assert(cookie:set({key = "Age", value = "20"}))
            assert(cookie:set({key = "Age", value = "20"}))
            ngx.say(select(2, cookie:set({value = "x"})))
            ngx.say(select(2, cookie:set({key = "x"})))
        }
    }
--- response_headers
Set-Cookie: Name=Bob; Expires=Wed, 09 Jun 2021 10:18:14 GMT; Max-Age=50; Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Strict; a4334aebaec, Age=20
--- response_body
missing cookie field "key"
missing cookie field "value"
