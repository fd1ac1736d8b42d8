# resty.roundrobin and resty.chash (moongate's own): weighted distribution, smoothness,
# updates, consistency of the hash ring.
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

=== TEST 1: roundrobin picks each node exactly weight times per cycle, spread out
--- config
    location /t {
        content_by_lua_block {
            local rr = require("resty.roundrobin"):new({a = 5, b = 1, c = 1})
            local run, longest, prev = 0, 0, nil
            for cycle = 1, 3 do
                local count = {}
                for _ = 1, 7 do
                    local id = rr:find()
                    count[id] = (count[id] or 0) + 1
                    run = (id == prev) and run + 1 or 1
                    if run > longest then longest = run end
                    prev = id
                end
                ngx.say(cycle, ": a=", count.a, " b=", count.b, " c=", count.c)
            end
            -- smooth: a heavy node never gets its whole cycle in one burst
            ngx.say("longest run of a: ", longest)
        }
    }
--- response_body
1: a=5 b=1 c=1
2: a=5 b=1 c=1
3: a=5 b=1 c=1
longest run of a: 4



=== TEST 2: roundrobin set, incr, decr, delete and reinit change the weights
--- config
    location /t {
        content_by_lua_block {
            local rr = require("resty.roundrobin"):new({a = 1, b = 1})
            local function counts(n)
                local c = {}
                for _ = 1, n do
                    local id = rr:next()
                    c[id] = (c[id] or 0) + 1
                end
                return (c.a or 0) .. "/" .. (c.b or 0) .. "/" .. (c.c or 0)
            end
            ngx.say(counts(4))
            rr:set("c", 2)
            ngx.say(counts(8))
            rr:incr("a")
            rr:decr("c", 2)
            ngx.say(counts(6))
            rr:delete("a")
            ngx.say(counts(3))
            rr:reinit({c = 3})
            ngx.say(counts(3))
            rr:reinit({})
            ngx.say(tostring(rr:find()))
        }
    }
--- response_body
2/2/0
2/2/4
4/2/0
0/3/0
0/0/3
nil



=== TEST 3: chash maps a key to one node, spreads keys by weight, moves few keys on change
--- config
    location /t {
        content_by_lua_block {
            local chash = require("resty.chash")
            local ch = chash:new({["10.0.0.1:80"] = 1, ["10.0.0.2:80"] = 1, ["10.0.0.3:80"] = 2})
            local first = {}
            local count = {}
            for i = 1, 4000 do
                local id, idx = ch:find("user-" .. i)
                first[i] = id
                count[id] = (count[id] or 0) + 1
                assert(type(idx) == "number")
                assert(ch:find("user-" .. i) == id, "stable")
            end
            local share = count["10.0.0.3:80"] / 4000
            ngx.say("heavy node share within 0.35..0.65: ", share > 0.35 and share < 0.65)
            ngx.say("light nodes both used: ", (count["10.0.0.1:80"] or 0) > 400 and (count["10.0.0.2:80"] or 0) > 400)
            ch:delete("10.0.0.2:80")
            local moved_other = 0
            for i = 1, 4000 do
                local id = ch:find("user-" .. i)
                if first[i] ~= "10.0.0.2:80" and id ~= first[i] then
                    moved_other = moved_other + 1
                end
                assert(id ~= "10.0.0.2:80")
            end
            ngx.say("keys of the remaining nodes moved: ", moved_other)
        }
    }
--- response_body
heavy node share within 0.35..0.65: true
light nodes both used: true
keys of the remaining nodes moved: 0



=== TEST 4: chash next walks the ring to other nodes; an empty ring finds nothing
--- config
    location /t {
        content_by_lua_block {
            local ch = require("resty.chash"):new({a = 1, b = 1})
            local id, idx = ch:find("k")
            local other = id
            local steps = 0
            while other == id and steps < 1000 do
                other, idx = ch:next(idx)
                steps = steps + 1
            end
            ngx.say(other ~= id, " ", (other == "a" or other == "b"))
            local empty = require("resty.chash"):new({})
            ngx.say(tostring(empty:find("k")))
        }
    }
--- response_body
true true
nil
