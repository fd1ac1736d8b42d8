# jsonpath (moongate's own): members, descendants, wildcards, indexes, unions, slices; nodes,
# paths, value, parent, apply, stringify; errors for bad and unsupported expressions.
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

=== TEST 1: members, wildcards, indexes, unions and slices select in document order
--- config
    location /t {
        content_by_lua_block {
            local jp = require("jsonpath")
            local cjson = require("cjson.safe")
            local doc = cjson.decode([[{"store": {"book": [
                {"author": "Ann", "price": 8}, {"author": "Bob", "price": 12},
                {"author": "Cy", "price": 9}, {"author": "Di", "isbn": "x-1"}],
                "bicycle": {"color": "red"}}, "n": 3}]])
            local function show(expr)
                local v, err = jp.query(doc, expr)
                ngx.say(expr, " => ", v and cjson.encode(v) or ("nil " .. err))
            end
            show("$.n")
            show("$.store.book[*].author")
            show("$.store.book[1].author")
            show("$.store.book[-1].isbn")
            show("$.store.book[0,2].price")
            show("$.store.book[1:3].author")
            show("$.store.book[::2].author")
            show("$.store.book[:-3].author")
            show("$['store']['bicycle'][\"color\"]")
            show("$.store.*.color")
            show("$.missing.x")
        }
    }
--- response_body
$.n => [3]
$.store.book[*].author => ["Ann","Bob","Cy","Di"]
$.store.book[1].author => ["Bob"]
$.store.book[-1].isbn => ["x-1"]
$.store.book[0,2].price => [8,9]
$.store.book[1:3].author => ["Bob","Cy"]
$.store.book[::2].author => ["Ann","Cy"]
$.store.book[:-3].author => ["Ann"]
$['store']['bicycle']["color"] => ["red"]
$.store.*.color => ["red"]
$.missing.x => {}



=== TEST 2: descendants reach every depth, parents first, and keep tables as values
--- config
    location /t {
        content_by_lua_block {
            local jp = require("jsonpath")
            local cjson = require("cjson.safe")
            local doc = { orgs = { a = { team = "cloud|infra" }, b = { team = { "devops", "qa" } } },
                          team = "top" }
            ngx.say(cjson.encode(jp.query(doc, "$..team")))
            ngx.say(cjson.encode(jp.query(doc, "$.orgs..team")))
            ngx.say(#jp.query(doc, "$..*"))
            ngx.say(cjson.encode(jp.query({ a = { { x = 1 }, { y = { x = 2 } } } }, "$..x")))
            ngx.say(cjson.encode(jp.query(doc, "$.orgs.b.team", 1)))
        }
    }
--- response_body
["top","cloud|infra",["devops","qa"]]
["cloud|infra",["devops","qa"]]
8
[1,2]
[["devops","qa"]]



=== TEST 3: nodes and paths number arrays from 0 and start at $
--- config
    location /t {
        content_by_lua_block {
            local jp = require("jsonpath")
            local cjson = require("cjson.safe")
            local doc = { users = { { token = "t1" }, { token = "t2", name = "b" } } }
            for _, n in ipairs(jp.nodes(doc, "$.users[*].token")) do
                ngx.say(table.concat(n.path, "/", 1, #n.path - 1), "/", n.path[#n.path],
                        " ", type(n.path[3]), " = ", n.value)
            end
            for _, p in ipairs(jp.paths(doc, "$..name")) do
                ngx.say(jp.stringify(p))
            end
            ngx.say(jp.stringify({ "$", "a b", 0, "c" }))
        }
    }
--- response_body
$/users/0/token number = t1
$/users/1/token number = t2
$.users[1].name
$["a b"][0].c



=== TEST 4: value reads the first match, sets it, and creates a plain path; parent and apply
--- config
    location /t {
        content_by_lua_block {
            local jp = require("jsonpath")
            local cjson = require("cjson.safe")
            local doc = { a = { { b = 1 }, { b = 2 } } }
            ngx.say(jp.value(doc, "$.a[*].b"))
            jp.value(doc, "$.a[1].b", 20)
            jp.value(doc, "$.new.deep", "x")
            ngx.say(doc.a[2].b, " ", doc.new.deep)
            ngx.say(cjson.encode(jp.parent(doc, "$.a[0].b")))
            local nodes = jp.apply(doc, "$.a[*].b", function(v) return v * 10 end)
            ngx.say(#nodes, " ", doc.a[1].b, " ", doc.a[2].b)
        }
    }
--- response_body
1
20 x
{"b":1}
2 10 200



=== TEST 5: bad expressions and non-table documents answer nil and an error
--- config
    location /t {
        content_by_lua_block {
            local jp = require("jsonpath")
            for _, expr in ipairs({ "$..([invalid", "store.book", "$.a[", "$.a[?(@.b > 1)]",
                                    "$.a[1:2:0]", "$.a.", "$.a b" }) do
                local ast, err = jp.parse(expr)
                ngx.say(type(ast), " ", tostring(err))
            end
            local v, err = jp.query("text", "$.a")
            ngx.say(tostring(v), " ", err)
            ngx.say(type(jp.parse("$.a[0]['b']")))
            ngx.say(table.concat(jp.query({ groups = { "x", "y" } }, "groups")[1], ","))
        }
    }
--- response_body
nil jsonpath: expected a member name at position 4 of "$..([invalid"
table nil
nil jsonpath: unclosed [ at position 4 of "$.a["
nil jsonpath: filter and script expressions ([?(…)], [(…)]) are not supported by moongate's jsonpath at position 4 of "$.a[?(@.b > 1)]"
nil jsonpath: slice step 0 at position 10 of "$.a[1:2:0]"
nil jsonpath: expected a member name at position 5 of "$.a."
nil jsonpath: unexpected " " at position 4 of "$.a b"
nil jsonpath: obj needs to be a table
table
x,y
