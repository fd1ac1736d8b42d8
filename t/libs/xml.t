# xml2lua and xmlhandler.tree (moongate's own): the table shape of a parsed document,
# entities, CDATA, comments, declarations, errors, and toXml.
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

=== TEST 1: repeated elements become lists, attributes go to _attr, text-only elements to strings
--- config
    location /t {
        content_by_lua_block {
            local xml2lua = require("xml2lua")
            local handler = require("xmlhandler.tree"):new()
            xml2lua.parser(handler):parse([==[
<?xml version="1.0" encoding="UTF-8"?>
<!-- people we know -->
<people>
  <person type="P">
    <name>Manoel</name>
    <city>Palmas-TO</city>
  </person>
  <person type="J">
    <name>University of Bras&#237;lia</name>
    <city>Bras&#xED;lia-DF</city>
  </person>
  <empty></empty>
  <self-closed/>
  <note lang="en">a &lt;b&gt; &amp; "c"</note>
  <code><![CDATA[if a < b then]]></code>
</people>
]==])
            local people = handler.root.people
            for i, p in ipairs(people.person) do
                ngx.say(i, " ", p._attr.type, " ", p.name, " ", p.city)
            end
            ngx.say(type(people.empty), " ", next(people.empty) == nil, " ", type(people["self-closed"]))
            ngx.say(people.note._attr.lang, " ", people.note[1])
            ngx.say(people.code)
        }
    }
--- response_body
1 P Manoel Palmas-TO
2 J University of Brasília Brasília-DF
table true table
en a <b> & "c"
if a < b then



=== TEST 2: namespaced names are kept, a single child is not a list, a repeated text element is a list of strings
--- config
    location /t {
        content_by_lua_block {
            local xml2lua = require("xml2lua")
            local handler = require("xmlhandler.tree"):new()
            xml2lua.parser(handler):parse([[<soap-env:Envelope xmlns:soap-env="http://e">
 <soap-env:Body><ns0:req xmlns:ns0="http://n"><ns0:name>Spain</ns0:name>
 <ns0:tag>a</ns0:tag><ns0:tag>b</ns0:tag><ns0:tag>c</ns0:tag></ns0:req></soap-env:Body>
</soap-env:Envelope>]])
            local req = handler.root["soap-env:Envelope"]["soap-env:Body"]["ns0:req"]
            ngx.say(req["ns0:name"], " ", req._attr["xmlns:ns0"], " ", table.concat(req["ns0:tag"], ","))
        }
    }
--- response_body
Spain http://n a,b,c



=== TEST 3: malformed documents raise xml2lua's errors
--- config
    location /t {
        content_by_lua_block {
            local xml2lua = require("xml2lua")
            for _, doc in ipairs({[[{"name":"hello","age":20}]], "<a><b></a>", "<a><b>", "<a>x</a>trailing",
                                  "<a x=1></a>", "<a><!-- open", "<a><![CDATA[x</a>", "<a></a >"}) do
                local handler = require("xmlhandler.tree"):new()
                local ok, err = pcall(xml2lua.parser(handler).parse, xml2lua.parser(handler), doc)
                ngx.say(tostring(ok), " ", (tostring(err):gsub("\n$", "")))
            end
        }
    }
--- response_body
false Error Parsing XML [char=1]
false Unbalanced Tag [char=7]
false Incomplete XML Document [char=6]
false Error Parsing XML [char=9]
false Error Parsing XML [char=1]
false Error Parsing Comment [char=4]
false Error Parsing CDATA [char=4]
true nil



=== TEST 4: a custom handler gets the callbacks; errorHandler may be replaced
--- config
    location /t {
        content_by_lua_block {
            local xml2lua = require("xml2lua")
            local events = {}
            local h = {
                starttag = function(_, tag) events[#events + 1] = "start " .. tag.name .. " " .. tostring(tag.attrs.id) end,
                endtag = function(_, tag) events[#events + 1] = "end " .. tag.name end,
                text = function(_, t) events[#events + 1] = "text " .. t end,
                decl = function(_, tag) events[#events + 1] = "decl " .. tag.attrs.version end,
            }
            xml2lua.parser(h):parse([[<?xml version="1.1"?><r id="7"> hi <c/></r>]])
            ngx.say(table.concat(events, "|"))
            local p = xml2lua.parser(h)
            local seen
            p.options.errorHandler = function(msg, pos) seen = msg .. "@" .. pos end
            p:parse("<r>")
            ngx.say(seen)
        }
    }
--- response_body
decl 1.1|start r 7|text hi|start c nil|end c|end r
Incomplete XML Document@3



=== TEST 5: toXml writes elements, attributes and lists, keys sorted
--- config
    location /t {
        content_by_lua_block {
            local xml2lua = require("xml2lua")
            ngx.say(xml2lua.toXml({field1 = "hello", n = 3, list = {"a", "b"},
                                   inner = {_attr = {id = "x&y"}, k = true},
                                   note = {_attr = {lang = "en"}, "1 < 2"}}, "data"))
            -- what toXml writes parses back to the same values
            local handler = require("xmlhandler.tree"):new()
            xml2lua.parser(handler):parse(xml2lua.toXml({a = {b = {"1", "2"}, c = "x"}}, "root"))
            ngx.say(table.concat(handler.root.root.a.b, ","), " ", handler.root.root.a.c)
        }
    }
--- response_body
<data>
  <field1>hello</field1>
  <inner id="x&amp;y">
    <k>true</k>
  </inner>
  <list>a</list>
  <list>b</list>
  <n>3</n>
  <note lang="en">1 &lt; 2</note>
</data>
1,2 x
