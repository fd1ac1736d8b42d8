# apisix.core.config_util (moongate's own): parse_time_unit's units, order rules and errors.
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

=== TEST 1: durations in every unit, largest first, spaces allowed, a bare last number is seconds
--- config
    location /t {
        content_by_lua_block {
            local parse = require("apisix.core.config_util").parse_time_unit
            for _, text in ipairs({ "7", "7s", "2m", "3h15m", "2s250ms", "1d 2h", "2w",
                                    "1M", "1y", "1h5", "45ms", "0" }) do
                ngx.say(text, " = ", parse(text))
            end
        }
    }
--- response_body
7 = 7
7s = 7
2m = 120
3h15m = 11700
2s250ms = 2.25
1d 2h = 93600
2w = 1209600
1M = 2592000
1y = 31536000
1h5 = 3605
45ms = 0.045
0 = 0



=== TEST 2: what is refused, and how
--- config
    location /t {
        content_by_lua_block {
            local parse = require("apisix.core.config_util").parse_time_unit
            for _, text in ipairs({ "", "-5", "5x", "2h3d", "1m1m", "3s2", "4ms9", "h" }) do
                local v, err = parse(text)
                ngx.say("[", text, "] ", tostring(v), " ", err)
            end
        }
    }
--- response_body
[] nil invalid data: 
[-5] nil invalid data: -
[5x] nil invalid data: x
[2h3d] nil unexpected unit: d
[1m1m] nil unexpected unit: m
[3s2] nil specific unit conflicts with the default unit second
[4ms9] nil specific unit conflicts with the default unit second
[h] nil invalid data: h
