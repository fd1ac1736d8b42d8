# resty.jit-uuid and resty.ksuid (moongate's own): formats, versions, validation, name-based
# UUIDs against known values, KSUID layout and ordering.
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

=== TEST 1: v4 UUIDs are canonical, version 4, RFC variant, and differ
--- config
    location /t {
        content_by_lua_block {
            local uuid = require("resty.jit-uuid")
            local seen, bad = {}, 0
            for i = 1, 2000 do
                local id = (i % 2 == 0) and uuid() or uuid.generate_v4()
                if not ngx.re.find(id, [[^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$]], "jo")
                   or seen[id] then
                    bad = bad + 1
                end
                seen[id] = true
            end
            ngx.say("bad: ", bad)
        }
    }
--- response_body
bad: 0



=== TEST 2: seed returns the seed; the same seed gives the same sequence
--- config
    location /t {
        content_by_lua_block {
            local uuid = require("resty.jit-uuid")
            ngx.say(uuid.seed(42))
            local a = uuid()
            uuid.seed(42)
            ngx.say(a == uuid())
            ngx.say(type(uuid.seed()))
            ngx.say(uuid.seed("x"))
        }
    }
--- response_body
42
true
number
nilseed must be a number



=== TEST 3: is_valid checks the canonical form and the variant, in any case
--- config
    location /t {
        content_by_lua_block {
            local uuid = require("resty.jit-uuid")
            for _, s in ipairs({"cbb297c0-a956-486d-ad1d-f9b42df9465a",
                                "CBB297C0-A956-486D-AD1D-F9B42DF9465A",
                                "cbb297c0-a956-786d-9d1d-f9b42df9465a",
                                "cbb297c0-a956-486d-cd1d-f9b42df9465a",
                                "cbb297c0a956486dad1df9b42df9465a",
                                "cbb297c0-a956-486d-ad1d-f9b42df9465",
                                "cbb297c0-a956-486d-ad1d-f9b42df9465g", 123}) do
                ngx.say(tostring(s), " ", tostring(uuid.is_valid(s)))
            end
        }
    }
--- response_body
cbb297c0-a956-486d-ad1d-f9b42df9465a true
CBB297C0-A956-486D-AD1D-F9B42DF9465A true
cbb297c0-a956-786d-9d1d-f9b42df9465a true
cbb297c0-a956-486d-cd1d-f9b42df9465a false
cbb297c0a956486dad1df9b42df9465a false
cbb297c0-a956-486d-ad1d-f9b42df9465 false
cbb297c0-a956-486d-ad1d-f9b42df9465g false
123 false



=== TEST 4: v3 and v5 UUIDs match RFC 4122's name-based algorithm
--- config
    location /t {
        content_by_lua_block {
            local uuid = require("resty.jit-uuid")
            local dns = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
            local url = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
            ngx.say(uuid.generate_v3(dns, "python.org"))
            ngx.say(uuid.generate_v5(dns, "python.org"))
            ngx.say(uuid.factory_v5(url)("http://example.com/a"))
            ngx.say(uuid.generate_v3("nope", "x"))
            ngx.say(uuid.generate_v5(dns, 1))
            ngx.say(uuid.factory_v3("nope"))
        }
    }
--- response_body
6fa459ea-ee8a-3ca4-894e-db77e160355e
886313e1-3b8a-5372-9b90-0c9aee199e5d
10379530-47d8-5772-a25e-18508c035bc8
nilnamespace must be a valid UUID
nilname must be a string
nilnamespace must be a valid UUID



=== TEST 5: a KSUID is 27 base62 digits holding the current second since 1400000000
--- config
    location /t {
        content_by_lua_block {
            local ksuid = require("resty.ksuid")
            local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            -- decode base62 into 20 bytes, independently of the module
            local function decode(s)
                local bytes = {}
                for i = 1, 20 do bytes[i] = 0 end
                for i = 1, #s do
                    local carry = alphabet:find(s:sub(i, i), 1, true) - 1
                    for j = 20, 1, -1 do
                        local v = bytes[j] * 62 + carry
                        bytes[j] = v % 256
                        carry = math.floor(v / 256)
                    end
                end
                return bytes
            end
            local id = ksuid.generate()
            ngx.say(#id, " ", ngx.re.find(id, "^[0-9A-Za-z]{27}$", "jo") ~= nil)
            local b = decode(id)
            local ts = ((b[1] * 256 + b[2]) * 256 + b[3]) * 256 + b[4]
            ngx.say(math.abs(ts + 1400000000 - ngx.time()) <= 2)
            local other = ksuid.generate()
            ngx.say(other ~= id)
        }
    }
--- response_body
27 true
true
true



=== TEST 6: KSUIDs sort by their second
--- config
    location /t {
        content_by_lua_block {
            local ksuid = require("resty.ksuid")
            local a = ksuid.generate()
            ngx.sleep(1.05)
            local b = ksuid.generate()
            ngx.say(a < b)
        }
    }
--- response_body
true
