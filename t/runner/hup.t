# Self-test of `moongate test`: under TEST_NGINX_USE_HUP nginx reloads between blocks instead of
# restarting, so shared dictionaries keep their content; the runner does not empty them.
BEGIN {
    $ENV{TEST_NGINX_USE_HUP} = 1;
}

use Test::Nginx::Socket::Lua;

repeat_each(1);
no_long_string();
log_level('warn');

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !defined $block->request;
});

run_tests;

__DATA__

=== TEST 1: a value set in one block ...
--- config
    location /t {
        content_by_lua_block {
            ngx.shared["internal-status"]:set("kept", "across a reload")
            ngx.say("set")
        }
    }
--- response_body
set



=== TEST 2: ... is still there in the next
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.shared["internal-status"]:get("kept") or "emptied")
        }
    }
--- response_body
across a reload
