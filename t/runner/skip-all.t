# Self-test of `moongate test`: plan(skip_all => ...) skips the whole file with its reason.
use Test::Nginx::Socket::Lua;

plan(skip_all => "this file is skipped on purpose");

run_tests();

__DATA__

=== TEST 1: never runs
--- config
    location /t { return 500; }
--- request
GET /t
