# Self-tests of `moongate test`: `--- extra_init_worker_by_lua` runs again before every block
# (nginx re-runs init_worker_by_lua at each reload, which APISIX's HUP-mode files rely on to
# reset state between blocks), and `t.*` modules resolve under the test root as in APISIX's
# harness (`require("t.toolkit.json")`) without the checkout root shadowing anything.
# HUP mode, as those files run: shared dictionaries outlive the reload between blocks.
BEGIN {
    $ENV{TEST_NGINX_USE_HUP} = 1;
}

use t::APISIX 'no_plan';

repeat_each(1);
no_long_string();
no_root_location();

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !$block->request;
    my $init = $block->extra_init_worker_by_lua // "";
    $init .= 'ngx.shared["internal-status"]:incr("init_worker_runs", 1, 0)';
    $block->set_value("extra_init_worker_by_lua", $init);
});

run_tests;

__DATA__

=== TEST 1: the init code ran once before the first block
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.shared["internal-status"]:get("init_worker_runs"))
        }
    }
--- response_body
1



=== TEST 2: and once more before the next one (same gateway, dicts kept under HUP)
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.shared["internal-status"]:get("init_worker_runs"))
        }
    }
--- response_body
2



=== TEST 3: a block's own init code runs too, before its requests
--- extra_init_worker_by_lua
    ngx.shared["internal-status"]:set("block_marker", "set by init")
--- config
    location /t {
        content_by_lua_block {
            ngx.say(ngx.shared["internal-status"]:get("block_marker"))
        }
    }
--- response_body
set by init



=== TEST 4: t.* modules resolve under the test root
--- config
    location /t {
        content_by_lua_block {
            local server = require("t.lib.server")
            ngx.say(type(server.go))
        }
    }
--- response_body
function



=== TEST 5: extra_init_by_lua runs once per gateway, before the block's requests
--- extra_init_by_lua
    package.loaded["moongate.init_marker"] = (package.loaded["moongate.init_marker"] or 0) + 1
--- config
    location /t {
        content_by_lua_block {
            ngx.say("init ran: ", package.loaded["moongate.init_marker"])
        }
    }
--- response_body
init ran: 1



=== TEST 6: the same code in the next block is not run again (nginx did not restart)
--- extra_init_by_lua
    package.loaded["moongate.init_marker"] = (package.loaded["moongate.init_marker"] or 0) + 1
--- config
    location /t {
        content_by_lua_block {
            ngx.say("init ran: ", package.loaded["moongate.init_marker"])
        }
    }
--- response_body
init ran: 1



=== TEST 7: a block without it gets a gateway where it never ran
--- config
    location /t {
        content_by_lua_block {
            ngx.say("init ran: ", tostring(package.loaded["moongate.init_marker"]))
        }
    }
--- response_body
init ran: nil
