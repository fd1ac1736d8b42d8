# resty.expr.v1 (moongate's own): every comparison operator, negation, logical nesting,
# ipmatch, the ngx.var default and lua-resty-expr's error words.
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

=== TEST 1: comparison operators against a context table
--- config
    location /t {
        content_by_lua_block {
            local expr = require("resty.expr.v1")
            local ctx = {name = "json", weight = "12", code = 200, ua = "Mozilla curl/8.1",
                         tags = {"a", "b"}}
            local cases = {
                {"name", "==", "json"}, {"name", "==", "JSON"}, {"name", "~=", "xml"},
                {"weight", "==", 12}, {"weight", "==", "12.0"}, {"code", "==", 200},
                {"weight", ">", 10}, {"weight", ">", 12}, {"weight", ">=", "12"},
                {"weight", "<", 13}, {"weight", "<=", 11}, {"name", ">", 1},
                {"missing", ">", 1}, {"missing", "==", "x"}, {"missing", "~=", "x"},
                {"ua", "~~", "curl/[0-9]+"}, {"ua", "~~", "^curl"}, {"ua", "~*", "MOZILLA"},
                {"ua", "~~", "MOZILLA"}, {"code", "~~", "^2"},
                {"name", "in", {"xml", "json"}}, {"name", "in", {"xml"}}, {"weight", "in", {12}},
                {"tags", "has", "b"}, {"tags", "has", "c"}, {"name", "has", "json"},
                {"name", "!", "==", "json"}, {"name", "!", "~~", "^x"},
                {"name", "JSON"}, {"name", "json"},
            }
            -- Its own encoder, set as APISIX sets cjson, whatever else this worker loaded.
            local json = require("cjson").new()
            json.encode_escape_forward_slash(false)
            for _, rule in ipairs(cases) do
                local ex = assert(expr.new({rule}))
                ngx.say(json.encode(rule), " ", tostring(ex:eval(ctx)))
            end
        }
    }
--- response_body
["name","==","json"] true
["name","==","JSON"] false
["name","~=","xml"] true
["weight","==",12] true
["weight","==","12.0"] false
["code","==",200] true
["weight",">",10] true
["weight",">",12] false
["weight",">=","12"] true
["weight","<",13] true
["weight","<=",11] false
["name",">",1] false
["missing",">",1] false
["missing","==","x"] false
["missing","~=","x"] true
["ua","~~","curl/[0-9]+"] true
["ua","~~","^curl"] false
["ua","~*","MOZILLA"] true
["ua","~~","MOZILLA"] false
["code","~~","^2"] true
["name","in",["xml","json"]] true
["name","in",["xml"]] false
["weight","in",[12]] false
["tags","has","b"] true
["tags","has","c"] false
["name","has","json"] false
["name","!","==","json"] false
["name","!","~~","^x"] true
["name","JSON"] true
["name","json"] true



=== TEST 2: logical operators nest, the first rule list is an implicit AND
--- config
    location /t {
        content_by_lua_block {
            local expr = require("resty.expr.v1")
            local ctx = {a = "1", b = "2"}
            local cases = {
                {{"a", "==", "1"}, {"b", "==", "2"}},
                {{"a", "==", "1"}, {"b", "==", "3"}},
                {"AND", {"a", "==", "1"}, {"b", "==", "3"}},
                {"OR", {"a", "==", "0"}, {"b", "==", "2"}},
                {"or", {"a", "==", "0"}, {"b", "==", "0"}},
                {"!AND", {"a", "==", "1"}, {"b", "==", "3"}},
                {"!AND", {"a", "==", "1"}, {"b", "==", "2"}},
                {"!OR", {"a", "==", "0"}, {"b", "==", "0"}},
                {"!OR", {"a", "==", "1"}, {"b", "==", "0"}},
                {"AND", {"a", "==", "1"}, {"OR", {"b", "==", "0"}, {"!AND", {"a", "==", "9"}, {"b", "==", "2"}}}},
                {},
            }
            for i, rule in ipairs(cases) do
                local ex = assert(expr.new(rule))
                ngx.say(i, " ", tostring(ex:eval(ctx)))
            end
        }
    }
--- response_body
1 true
2 false
3 false
4 true
5 false
6 true
7 false
8 true
9 false
10 true
11 true



=== TEST 3: ipmatch takes one address/CIDR or a list
--- config
    location /t {
        content_by_lua_block {
            local expr = require("resty.expr.v1")
            local list = assert(expr.new({{"ip", "ipmatch", {"10.0.0.0/8", "::1"}}}))
            local one = assert(expr.new({{"ip", "ipmatch", "192.168.1.0/24"}}))
            local neg = assert(expr.new({{"ip", "!", "ipmatch", "192.168.1.0/24"}}))
            for _, ip in ipairs({"10.1.2.3", "::1", "192.168.1.7", "8.8.8.8", "junk"}) do
                ngx.say(ip, " ", tostring(list:eval({ip = ip})), " ", tostring(one:eval({ip = ip})),
                        " ", tostring(neg:eval({ip = ip})))
            end
        }
    }
--- response_body
10.1.2.3 true false true
::1 true false true
192.168.1.7 false true false
8.8.8.8 false false true
junk false false true



=== TEST 4: without a context, ngx.var is read
--- config
    location /t {
        content_by_lua_block {
            local expr = require("resty.expr.v1")
            local ex = assert(expr.new({{"arg_name", "==", "json"}, {"arg_weight", ">", 10},
                                        {"arg_weight", "!", ">", 15}}))
            ngx.say(tostring(ex:eval()))
        }
    }
--- request
GET /t?name=json&weight=12
--- response_body
true



=== TEST 5: malformed rules are refused with lua-resty-expr's words
--- config
    location /t {
        content_by_lua_block {
            local expr = require("resty.expr.v1")
            local cases = {
                {{}},
                {"arg_a", "==", "1"},
                {{"arg_a", "*=", "1"}},
                {{"arg_name", 123, "jack"}},
                {{"arg_a", "?", "==", "1"}},
                {"AND", {"arg_a", "==", "1"}},
                {{"arg_a", "==", "1"}, "x"},
                {{true, "==", "1"}},
                {{"ip", "ipmatch", "300.1.1.1"}},
                {{"ip", "ipmatch", {}}},
                {{"ua", "~~", "(unclosed"}},
            }
            for i, rule in ipairs(cases) do
                local ex, err = expr.new(rule)
                ngx.say(i, " ", tostring(ex), " ", err)
            end
            ngx.say(select(2, expr.new("x")))
        }
    }
--- response_body_like
1 nil rule too short
2 nil rule should be wrapped inside brackets
3 nil invalid operator '\*='
4 nil invalid operator '123'
5 nil bad 'not' expression
6 nil rule too short
7 nil invalid expression
8 nil invalid expression
9 nil invalid ip address: 300.1.1.1
10 nil invalid ip address
11 nil failed to compile regex \(unclosed: pcre_compile\(\) failed: .*
rule should be an array
