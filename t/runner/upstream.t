# Self-tests of `moongate test`: apisix_yaml routes proxied to the test upstream on 1980-1982,
# served by the --server-lua module (tests/t_suites.rs passes t/fixtures/test-server.lua).
use t::APISIX 'no_plan';

repeat_each(1);
no_long_string();

run_tests;

__DATA__

=== TEST 1: an apisix_yaml route reaches the test upstream on 1980
--- apisix_yaml
routes:
  - id: 1
    uri: /hello
    upstream:
      nodes:
        "127.0.0.1:1980": 1
      type: roundrobin
#END
--- request
GET /hello
--- response_body
fixture upstream 1980 /hello
--- error_log
fixture upstream got /hello



=== TEST 2: and 1982, with a location of the block next to the route
--- apisix_yaml
routes:
  - id: 2
    uri: /other
    upstream:
      nodes:
        "127.0.0.1:1982": 1
      type: roundrobin
#END
--- config
    location /t {
        content_by_lua_block { ngx.say("location") }
    }
--- request eval
["GET /other", "GET /t"]
--- response_body eval
["fixture upstream 1982 /other\n", "location\n"]
--- no_error_log
[error]



=== TEST 3: the previous block's routes are gone
--- request
GET /other
--- error_code: 404
