# resty.ipmatcher (moongate's own): IPv4/IPv6 parsing, CIDR sets, values, binary addresses.
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

=== TEST 1: parse_ipv4 gives the address in host byte order, false for anything else
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            for _, s in ipairs({"0.0.0.0", "127.0.0.1", "255.255.255.255", "10.0.0.256",
                                "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.4 ", "a.b.c.d", "::1"}) do
                ngx.say(s, " ", tostring(m.parse_ipv4(s)))
            end
        }
    }
--- response_body
0.0.0.0 0
127.0.0.1 2130706433
255.255.255.255 4294967295
10.0.0.256 false
1.2.3 false
1.2.3.4.5 false
01.2.3.4 false
1.2.3.4  false
a.b.c.d false
::1 false



=== TEST 2: parse_ipv6 gives four 32-bit words; brackets, :: and an embedded IPv4 tail are accepted
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            for _, s in ipairs({"::1", "[::1]", "::", "fe80::1:2", "2001:db8:0:0:0:0:0:ff",
                                "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
                                "1::2::3", "12345::", "1:2:3:4:5:6:7", ":1::", "1:", "[::1",
                                "127.0.0.1", "g::1"}) do
                local w = m.parse_ipv6(s)
                if w then
                    ngx.say(s, " ", string.format("%08x %08x %08x %08x", w[1], w[2], w[3], w[4]))
                else
                    ngx.say(s, " ", tostring(w))
                end
            end
        }
    }
--- response_body
::1 00000000 00000000 00000000 00000001
[::1] 00000000 00000000 00000000 00000001
:: 00000000 00000000 00000000 00000000
fe80::1:2 fe800000 00000000 00000000 00010002
2001:db8:0:0:0:0:0:ff 20010db8 00000000 00000000 000000ff
::ffff:1.2.3.4 00000000 00000000 0000ffff 01020304
1:2:3:4:5:6:7:8 00010002 00030004 00050006 00070008
1:2:3:4:5:6:7:8:9 false
1::2::3 false
12345:: false
1:2:3:4:5:6:7 false
:1:: false
1: false
[::1 false
127.0.0.1 false
g::1 false



=== TEST 3: IPv4 addresses and CIDRs of any length
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            local ip = assert(m.new({"127.0.0.1", "192.168.0.0/16", "10.1.2.3/8", "172.16.5.4/31"}))
            for _, s in ipairs({"127.0.0.1", "127.0.0.2", "192.168.255.1", "192.169.0.1",
                                "10.200.0.1", "11.0.0.1", "172.16.5.4", "172.16.5.5", "172.16.5.6",
                                "::1"}) do
                ngx.say(s, " ", tostring(ip:match(s)))
            end
            local all = assert(m.new({"0.0.0.0/0"}))
            ngx.say("0/0 ", tostring(all:match("8.8.8.8")), " ", tostring(all:match("::1")))
        }
    }
--- response_body
127.0.0.1 true
127.0.0.2 false
192.168.255.1 true
192.169.0.1 false
10.200.0.1 true
11.0.0.1 false
172.16.5.4 true
172.16.5.5 true
172.16.5.6 false
::1 false
0/0 true false



=== TEST 4: IPv6 addresses and CIDRs across word boundaries
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            local ip = assert(m.new({"::1", "fe80::/10", "2001:db8::/32", "2001:db8:1:2:3::/80", "2400::/7"}))
            for _, s in ipairs({"::1", "::2", "fe80::abcd", "febf:ffff::1", "fec0::1",
                                "2001:db8:ffff::1", "2001:db9::1", "2401:1::", "2600::",
                                "[2001:db8::5]", "127.0.0.1"}) do
                ngx.say(s, " ", tostring(ip:match(s)))
            end
            local p = assert(m.new({"2001:db8:1:2:3::/80"}))
            ngx.say(tostring(p:match("2001:db8:1:2:3:0:ffff:1")), " ", tostring(p:match("2001:db8:1:2:3:1::")), " ", tostring(p:match("2001:db8:1:2:4::")))
        }
    }
--- response_body
::1 true
::2 false
fe80::abcd true
febf:ffff::1 true
fec0::1 false
2001:db8:ffff::1 true
2001:db9::1 false
2401:1:: true
2600:: false
[2001:db8::5] true
127.0.0.1 false
true true false



=== TEST 5: new refuses a bad entry, match refuses a non-address
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            for _, list in ipairs({{"1.2.3.4/33"}, {"::1/129"}, {"1.2.3.4/"}, {"1.2.3.4/a"},
                                   {"host.example"}, {"1.2.3.4", 5}}) do
                local ip, err = m.new(list)
                ngx.say(tostring(ip), " ", err)
            end
            local ip = assert(m.new({"1.2.3.4"}))
            ngx.say(ip:match("not-an-ip"))
        }
    }
--- response_body
nil invalid ip address: 1.2.3.4/33
nil invalid ip address: ::1/129
nil invalid ip address: 1.2.3.4/
nil invalid ip address: 1.2.3.4/a
nil invalid ip address: host.example
nil invalid ip address: 5
nilinvalid ip address: not-an-ip



=== TEST 6: new_with_value returns the value of the most specific block
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            local ip = assert(m.new_with_value({
                ["10.0.0.0/8"] = "wide",
                ["10.1.0.0/16"] = "narrow",
                ["10.1.2.3"] = {info = "host"},
                ["2001:db8::/32"] = "v6",
            }))
            ngx.say(ip:match("10.9.9.9"), " ", ip:match("10.1.9.9"), " ",
                    ip:match("10.1.2.3").info, " ", ip:match("2001:db8::1"), " ",
                    tostring(ip:match("11.0.0.1")))
        }
    }
--- response_body
wide narrow host v6 false



=== TEST 7: match_bin takes 4- and 16-byte network-order addresses
--- config
    location /t {
        content_by_lua_block {
            local m = require("resty.ipmatcher")
            local ip = assert(m.new({"192.168.0.0/16", "::1"}))
            ngx.say(tostring(ip:match_bin("\192\168\1\1")), " ",
                    tostring(ip:match_bin("\192\169\1\1")), " ",
                    tostring(ip:match_bin(string.rep("\0", 15) .. "\1")))
            ngx.say(ip:match_bin("abc"))
        }
    }
--- response_body
true false true
nilinvalid binary ip address
