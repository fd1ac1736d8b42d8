# The ngx output API through moongate test: say, print, exit, status, header, redirect.
use Test::Nginx::Socket::Lua;

repeat_each(2);
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

=== TEST 1: ngx.say joins its arguments, flattens tables and ends the line
--- config
    location /t {
        content_by_lua_block {
            ngx.say("a", 1, " ", true, " ", nil == nil)
            ngx.say({"x", {"y", "z"}})
            ngx.print("no newline")
        }
    }
--- response_body chomp
a1 true true
xyz
no newline



=== TEST 2: ngx.exit with a status after output was not started sends that status
--- config
    location /t {
        content_by_lua_block {
            ngx.exit(418)
        }
    }
--- error_code: 418



=== TEST 3: ngx.status and ngx.header set before the first output apply
--- config
    location /t {
        content_by_lua_block {
            ngx.status = 201
            ngx.header["X-One"] = "1"
            ngx.header.x_two = "2"
            ngx.header["Content-Type"] = "application/json"
            ngx.say('{"ok":true}')
        }
    }
--- error_code: 201
--- response_headers
X-One: 1
X-Two: 2
Content-Type: application/json
--- response_body
{"ok":true}



=== TEST 4: ngx.redirect answers with the status and Location
--- config
    location /t {
        content_by_lua_block {
            return ngx.redirect("/elsewhere", 301)
        }
    }
--- error_code: 301
--- response_headers
Location: /elsewhere



=== TEST 5: header_filter_by_lua changes what content_by_lua produced
--- config
    location /t {
        content_by_lua_block { ngx.say("body") }
        header_filter_by_lua_block {
            ngx.header["X-Filtered"] = "yes"
            ngx.header["Content-Length"] = nil
        }
    }
--- response_headers
X-Filtered: yes
--- response_body
body



=== TEST 6: body_filter_by_lua rewrites the chunks
--- config
    location /t {
        content_by_lua_block { ngx.say("hello") }
        header_filter_by_lua_block { ngx.header["Content-Length"] = nil }
        body_filter_by_lua_block {
            if ngx.arg[1] then
                ngx.arg[1] = string.upper(ngx.arg[1])
            end
        }
    }
--- response_body
HELLO



=== TEST 7: ngx.log writes nginx-shaped lines at their level
--- config
    location /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "warned ", 42)
            ngx.log(ngx.ERR, "errored")
            ngx.log(ngx.INFO, "below the level")
            ngx.say("ok")
        }
    }
--- response_body
ok
--- error_log eval
[qr/\[warn\] \d+#\d+: .*warned 42/, qr/\[error\] .*errored/]
--- no_error_log
below the level



=== TEST 8: access_by_lua answering early skips content
--- config
    location /t {
        access_by_lua_block {
            if ngx.var.arg_deny then
                ngx.status = 403
                ngx.say("denied")
                return ngx.exit(403)
            end
        }
        content_by_lua_block { ngx.say("content") }
    }
--- request eval
["GET /t?deny=1", "GET /t"]
--- error_code eval
[403, 200]
--- response_body eval
["denied\n", "content\n"]



=== TEST 9: ngx.resp.add_header appends, but replaces Content-Type, which nginx keeps once
--- config
    location /t {
        content_by_lua_block {
            ngx.resp.add_header("Content-Type", "application/json")
            ngx.resp.add_header("Content-Type", "application/json+v1")
            ngx.resp.add_header("X-Multi", "one")
            ngx.resp.add_header("X-Multi", "two")
            ngx.say("ok")
        }
    }
--- response_headers
Content-Type: application/json+v1
X-Multi: one, two
--- response_body
ok
