# net.url (moongate's own): parse, build, normalize, resolve (RFC 3986's examples), query
# strings with brackets, path segments.
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

=== TEST 1: parse splits every part; port is a number; tostring builds it back
--- config
    location /t {
        content_by_lua_block {
            local url = require("net.url")
            local u = url.parse("HTTPS://bob:s%40cret@Example.com:8443/a/b%20c?x=1&y=two+words&z#frag")
            ngx.say(u.scheme, "|", u.user, "|", u.password, "|", u.host, "|", u.port, "|",
                    type(u.port), "|", u.path, "|", u.query.x, "|", u.query.y, "|", u.query.z,
                    "|", u.fragment, "|", u.authority)
            ngx.say(tostring(u))
            local v = url.parse("http://127.0.0.1:1980/log")
            ngx.say(v.host, " ", v.port, " ", v.path)
            local w = url.parse("http://[::1]:8080/x")
            ngx.say(w.host, " ", w.port)
            local plain = url.parse("http://example.com")
            ngx.say(plain.host, " ", tostring(plain.port), " [", plain.path, "]")
            local rel = url.parse("/just/a/path?q=1")
            ngx.say(tostring(rel.scheme), " ", tostring(rel.host), " ", rel.path, " ", rel.query.q)
            -- escapes of characters a path may hold bare are decoded, the others kept
            ngx.say(url.parse("args=%40%23%24%25%5e%26%2fx%41/b").path)
        }
    }
--- response_body
https|bob|s@cret|Example.com|8443|number|/a/b%20c|1|two words||frag|bob:s%40cret@Example.com:8443
https://bob:s%40cret@Example.com:8443/a/b%20c?x=1&y=two%20words&z=#frag
127.0.0.1 1980 /log
[::1] 8080
example.com nil []
nil nil /just/a/path 1
args=@%23$%25%5E&%2FxA/b



=== TEST 2: normalize lower-cases, drops the default port, cleans the path
--- config
    location /t {
        content_by_lua_block {
            local url = require("net.url")
            ngx.say(tostring(url.parse("http://www.FOO.com:80///foo/../foo/./bar"):normalize()))
            ngx.say(tostring(url.parse("HTTPS://Host:443/%7euser/%2fx/a/.."):normalize()))
            ngx.say(tostring(url.parse("http://host:8080"):normalize()))
            ngx.say(url.removeDotSegments("/a/b/c/./../../g"), " ", url.removeDotSegments("mid/content=5/../6"))
        }
    }
--- response_body
http://www.foo.com/foo/bar
https://host/~user/%2Fx/
http://host:8080/
/a/g mid/6



=== TEST 3: resolve follows RFC 3986's normal examples
--- config
    location /t {
        content_by_lua_block {
            local url = require("net.url")
            local base = url.parse("http://a/b/c/d;p?q")
            for _, rel in ipairs({"g:h", "g", "./g", "g/", "/g", "//g", "?y", "g?y", "#s",
                                  "g#s", "g?y#s", ";x", "g;x", "", ".", "./", "..", "../",
                                  "../g", "../..", "../../", "../../g"}) do
                ngx.say(rel, " = ", tostring(base:resolve(rel)))
            end
        }
    }
--- response_body
g:h = g:h
g = http://a/b/c/g
./g = http://a/b/c/g
g/ = http://a/b/c/g/
/g = http://a/g
//g = http://g
?y = http://a/b/c/d;p?y=
g?y = http://a/b/c/g?y=
#s = http://a/b/c/d;p?q=#s
g#s = http://a/b/c/g#s
g?y#s = http://a/b/c/g?y=#s
;x = http://a/b/c/;x
g;x = http://a/b/c/g;x
 = http://a/b/c/d;p?q=
. = http://a/b/c/
./ = http://a/b/c/
.. = http://a/b/
../ = http://a/b/
../g = http://a/b/g
../.. = http://a/
../../ = http://a/
../../g = http://a/g



=== TEST 4: query strings: brackets, cumulative parameters, building, separators
--- config
    location /t {
        content_by_lua_block {
            local url = require("net.url")
            local q = url.parseQuery("first=abc&a[]=123&a[]=false&b[]=str&c[]=3.5&a[]=last&m[k]=v")
            ngx.say(tostring(q))
            ngx.say(q.a[1], " ", q.a[3], " ", q.m.k)
            ngx.say(url.buildQuery({b = "x y", a = {1, 2}, ["c&d"] = "e=f"}))
            ngx.say(tostring(url.parseQuery("x=1;y=2", ";").y))
            url.options.cumulative_parameters = true
            local multi = url.parseQuery("k=1&k=2&k=3")
            url.options.cumulative_parameters = false
            ngx.say(table.concat(multi.k, ","), " ", url.parseQuery("k=1&k=2").k)
            local u = url.parse("http://www.example.com")
            u.query.foo = "bar"
            ngx.say(tostring(u))
            u:setQuery({z = 1})
            ngx.say(tostring(u))
        }
    }
--- response_body
a[1]=123&a[2]=false&a[3]=last&b[1]=str&c[1]=3.5&first=abc&m[k]=v
123 last v
a[1]=1&a[2]=2&b=x%20y&c%26d=e%3Df
2
1,2,3 2
http://www.example.com?foo=bar
http://www.example.com?z=1



=== TEST 5: segments are escaped as they are added
--- config
    location /t {
        content_by_lua_block {
            local url = require("net.url")
            local u = url.parse("http://example.com")
            local _ = u / "bands" / "AC/DC"
            ngx.say(tostring(u))
        }
    }
--- response_body
http://example.com/bands/AC%2FDC
