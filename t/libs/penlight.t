# pl.stringx and pl.tablex (moongate's own subset of Penlight): the functions plugins call.
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

=== TEST 1: stringx strip, split, find and friends
--- config
    location /t {
        content_by_lua_block {
            local s = require("pl.stringx")
            ngx.say("[", s.strip("  \t curl/8.1 \n"), "] [", s.strip("xxhixx", "x"), "] [",
                    s.lstrip("  a "), "] [", s.rstrip("  a "), "]")
            ngx.say(table.concat(s.split("a,b,,c", ","), "|"), " ", table.concat(s.split(" a  b c "), "|"),
                    " ", table.concat(s.split("a.b.c.d", ".", 2), "|"))
            ngx.say(s.rfind("/usr/local/apisix/logs/a__b__c", "__"), " ", s.rfind("/a/b", "/"),
                    " ", tostring(s.rfind("abc", "x")), " ", s.lfind("a.b.c", "."))
            ngx.say(tostring(s.startswith("prefix-x", "prefix")), " ", tostring(s.endswith("file.lua", ".lua")),
                    " ", tostring(s.endswith("a.txt", {".lua", ".txt"})))
            ngx.say(s.replace("a.b.c", ".", "%", 1), " ", s.count("banana", "an"), " ",
                    s.join("-", {"x", "y"}), " ", table.concat(s.splitlines("l1\r\nl2\nl3"), "|"))
            ngx.say(tostring(s.isdigit("123")), " ", tostring(s.isdigit("12a")), " ",
                    s.center("x", 5, "*"), " ", s.shorten("abcdefgh", 6))
            ngx.say(pcall(s.strip, 42))
        }
    }
--- response_body
[curl/8.1] [hi] [a ] [  a]
a|b||c a|b|c a|b.c.d
28 3 nil 2
true true true
a%b.c 2 x-y l1|l2|l3
true false **x** abc...
falseargument 1 expected a 'string', got a 'number'



=== TEST 2: tablex copies, compares and reshapes tables
--- config
    location /t {
        content_by_lua_block {
            local t = require("pl.tablex")
            local src = {a = {b = {1, 2}}, c = "x"}
            local deep = t.deepcopy(src)
            deep.a.b[1] = 9
            local shallow = t.copy(src)
            ngx.say(src.a.b[1], " ", shallow.a == src.a, " ", t.deepcompare(src, t.deepcopy(src)),
                    " ", t.deepcompare(src, deep), " ", t.deepcompare({1, 2}, {1, 2, 3}))
            ngx.say(t.size({a = 1, b = 2, 3}), " ", t.find({"x", "y", "z"}, "y"), " ",
                    tostring(t.find({"x"}, "q")), " ", table.concat(t.imap(function(v) return v * 2 end, {1, 2, 3}), ","))
            local keys = {}
            for k, v in t.sort({b = 2, a = 1, c = 3}) do keys[#keys + 1] = k .. v end
            ngx.say(table.concat(keys, " "), " ", table.concat(t.filter({1, 2, 3, 4}, function(v) return v % 2 == 0 end), ","))
            local m = t.merge({a = 1, b = 2}, {b = 3, c = 4}, true)
            local i = t.intersection({a = 1, b = 2}, {b = 3, c = 4})
            local d = t.difference({a = 1, b = 2}, {b = 3})
            ngx.say(m.a, m.b, m.c, " ", tostring(i.a), i.b, " ", d.a, tostring(d.b),
                    " ", t.compare({1, 2}, {1, 2}), " ", t.makeset({"q"}).q, " ", t.count_map({"a", "a", "b"}).a)
        }
    }
--- response_body
1 true true false false
3 2 nil 2,4,6
a1 b2 c3 2,4
134 nil2 1nil true true 2



=== TEST 3: path joins, normalises and splits POSIX paths
--- config
    location /t {
        content_by_lua_block {
            local path = require("pl.path")
            ngx.say(path.join("logs.example.com", "bulk", "tok", "tag", "bulk"), " ",
                    path.join("/a/", "b"), " ", path.join("/a", "/abs"))
            ngx.say(path.normpath("/v1/kv//secret/./a/../key/"), " ", path.normpath("a/../../b"),
                    " ", path.normpath(""), " ", path.normpath("//x/y"), " ", path.normpath("/.."))
            ngx.say(path.dirname("/a/b/c.txt"), " ", path.basename("/a/b/c.txt"), " ",
                    path.dirname("/c"), " [", path.dirname("c"), "] ", path.extension("x/y.tar.gz"),
                    " [", path.extension("x/.hidden"), "] ", (path.splitext("x/y.tar.gz")))
            ngx.say(tostring(path.isabs("/a")), " ", tostring(path.isabs("a")), " ",
                    path.abspath("b/../c", "/base"), " ", tostring(path.isdir("/")), " ",
                    tostring(path.isfile("/")), " ", tostring(path.exists("/definitely/not/here")))
        }
    }
--- response_body
logs.example.com/bulk/tok/tag/bulk /a/b /abs
/v1/kv/secret/key ../b . //x/y /
/a/b c.txt / [] .gz [] x/y.tar
true false /base/c true false false
