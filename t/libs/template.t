# resty.template (moongate's own): the documented tags ({{ }}, {* *}, {% %}, {# #}, {( )},
# {[ ]}, {-block-}, {-verbatim-}, {-raw-}, \{{), context lookup, compile cache, errors.
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

=== TEST 1: {{ }} escapes HTML, {* *} writes raw, nil writes nothing, globals resolve
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            local render = template.compile([[{{a}}|{*a*}|{{n}}|{*missing*}|{{x + 1}}|{* string.gsub(s, "o", "0") *}|{{ok}}]])
            ngx.say(render({ a = [[<b a="1">&'/]], n = 42, x = 1, s = "foo", ok = false }))
            ngx.say(template.escape("a<b"), " ", template.output(nil), "|", template.output(function() return 7 end))
        }
    }
--- response_body
&lt;b a=&quot;1&quot;&gt;&amp;&#39;&#47;|<b a="1">&'/|42||2|f00|false
a&lt;b |7



=== TEST 2: code tags run Lua, drop the line break after them; comments vanish
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            local view = [[
{% for i, v in ipairs(items) do %}
{{i}}={{v}}{# not written #}
{% end %}
{% if flag then %}yes{% else %}no{% end %}
{% local doubled = n * 2 %}
{{doubled}} {{context.n}}]]
            ngx.print(template.process(view, { items = { "a", "b" }, flag = nil, n = 21 }))
            ngx.say()
        }
    }
--- response_body
1=a
2=b
no42 21



=== TEST 3: verbatim and raw blocks, escaped tags, unclosed tags stay text
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            ngx.say(template.process([[{-verbatim-}{{x}}{-verbatim-} {-raw-}{%y%}{-raw-} \{{x}} {{x]], { x = 1 }))
        }
    }
--- response_body
{{x}} {%y%} {{x}} {{x



=== TEST 4: named blocks go to `blocks`, includes render a file with a context
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            local dir = ngx.config.prefix() .. "/tpl"
            os.execute("mkdir -p " .. dir)
            local f = assert(io.open(dir .. "/part.html", "w"))
            f:write("[{{name}}]")
            f:close()
            template.root = dir
            ngx.say(template.process([[a{(part.html)}b{(part.html, { name = "inner" })}c{[file]}]],
                                     { name = "outer", file = "part.html" }))
            ngx.say(template.process([[x{-head-}H{{v}}{-head-}y{*blocks.head*}]], { v = 1 }))
            ngx.say(template.process_file("part.html", { name = "f" }))
            template.root = nil
        }
    }
--- response_body
a[outer]b[inner]c[outer]
xyH1
[f]



=== TEST 5: compile caches by view or key; assignments stay in their render
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            local view = "{% y = (y or 0) + v %}{{y}}"
            local r1, c1 = template.compile(view)
            local r2, c2 = template.compile(view)
            ngx.say(tostring(c1), " ", tostring(c2), " ", r1({ v = 1 }), " ", r2({ v = 5 }), " ", tostring(y))
            local _, c3 = template.compile(view, "no-cache")
            ngx.say(tostring(c3))
            local obj = template.new("{{greeting}}, {{who}}")
            obj.greeting = "hello"
            ngx.say(obj:process({ who = "world" }))
        }
    }
--- response_body
false true 1 5 nil
false
hello, world



=== TEST 6: syntax and runtime errors are raised; precompile is refused by name
--- config
    location /t {
        content_by_lua_block {
            local template = require("resty.template")
            local ok, err = pcall(template.compile, "{% if x then %}never closed")
            ngx.say(ok, " ", err:find("'end' expected", 1, true) ~= nil)
            local render = template.compile("{{ a.b.c }}")
            ok, err = pcall(render, { a = {} })
            ngx.say(ok, " ", err:find("attempt to index", 1, true) ~= nil)
            ok, err = pcall(function() return template.precompile end)
            ngx.say(ok, " ", err:match("resty%.template%.precompile is not supported.*"))
        }
    }
--- response_body
false true
false true
false resty.template.precompile is not supported by moongate's resty.template
