# Self-tests of `moongate test`: t::APISIX's defaults (a default `no_error_log [error]` and a
# request timeout), its preprocessor order (the file's runs first), skip_eval, and LAST.
use t::APISIX 'no_plan';

repeat_each(1);
no_long_string();
no_root_location();

add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value("request", "GET /t") if !$block->request;
    # t::APISIX's own defaults run after this one: no timeout may be set yet.
    $block->set_value("error_code", 599) if defined $block->timeout;
});

run_tests;

__DATA__

=== TEST 1: the file preprocessor ran before t::APISIX's defaults
--- config
    location /t {
        content_by_lua_block {
            ngx.say("fine")
        }
    }
--- response_body
fine



=== TEST 2: skip_eval skips when its Perl condition is true
--- skip_eval: 1: 1 + 1 == 2
--- config
    location /t { return 200 "x"; }
--- response_body
never



=== TEST 3: skip_eval runs the block when its condition is false
--- skip_eval: 1: $ENV{MOONGATE_NO_SUCH_VARIABLE}
--- config
    location /t {
        content_by_lua_block {
            ngx.print("ran")
        }
    }
--- response_body chomp
ran



=== TEST 4: the last block to run
--- LAST
--- config
    location /t {
        content_by_lua_block {
            ngx.say("last")
        }
    }
--- response_body
last



=== TEST 5: after LAST: never runs, never reported
--- config
    location /t { return 500; }
