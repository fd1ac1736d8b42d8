# multipart (moongate's own): parsing CRLF and LF bodies by boundary, repeated names, setting,
# deleting and writing parts back.
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

=== TEST 1: parts by name, headers, repeated names as arrays, LF and CRLF bodies
--- config
    location /t {
        content_by_lua_block {
            local multipart = require("multipart")
            local cjson = require("cjson.safe")
            local crlf = table.concat({
                "--XyZ", 'Content-Disposition: form-data; name="a"', "", "one",
                "--XyZ", 'Content-Disposition: form-data; name="f"; filename="x.txt"',
                "Content-Type: text/plain", "", "line1\r\nline2",
                "--XyZ", 'Content-Disposition: form-data; name="a"', "", "two",
                "--XyZ--", ""}, "\r\n")
            local m = multipart(crlf, 'multipart/form-data; boundary="XyZ"')
            ngx.say(m:get("a").value, " ", m:get("f").value == "line1\r\nline2", " ", #m:get("f").headers)
            ngx.say(cjson.encode(m:get_as_array("a")), " ", tostring(m:get("none")))
            local all = m:get_all_with_arrays()
            ngx.say(cjson.encode(all.a), " ", m:get_all().a)
            local lf = "--b1\nContent-Disposition: form-data; name=\"name\"\n\nLarry\n--b1\nContent-Disposition: form-data; name=age\n\n10\n--b1--"
            local m2 = multipart.new(lf, "multipart/related; boundary=b1")
            ngx.say(m2:get("name").value, " ", m2:get("age").value)
            ngx.say(cjson.encode(multipart("not multipart", "multipart/form-data; boundary=zz"):get_all()))
            ngx.say(cjson.encode(multipart("--zz\r\n", "text/plain"):get_all()))
        }
    }
--- response_body
one true 2
["one","two"] nil
["one","two"] one
Larry 10
{}
{}



=== TEST 2: set_simple changes or appends, delete removes, tostring writes CRLF
--- config
    location /t {
        content_by_lua_block {
            local multipart = require("multipart")
            local m = multipart("--B\nContent-Disposition: form-data; name=\"x\"\n\n1\n--B--", "multipart/form-data; boundary=B")
            m:set_simple("x", 2)
            m:set_simple("y", "file body", "y.bin", "application/octet-stream")
            m:set_simple("z", "gone")
            m:delete("z")
            local out = m:tostring()
            ngx.print((out:gsub("\r\n", "|")))
            ngx.say()
            ngx.say(tostring(m) == out)
        }
    }
--- response_body
--B|Content-Disposition: form-data; name="x"||2|--B|Content-Disposition: form-data; name="y"; filename="y.bin"|Content-Type: application/octet-stream||file body|--B--|
true
