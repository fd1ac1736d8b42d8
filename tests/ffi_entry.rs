//! The FFI entry points behind the hottest `ngx.*` functions (src/lua/ffi_entry.rs), through the
//! real binary: the cases where the fast path hands over to the raw function (too many or too
//! big headers, no request), hostile arguments, and calls straight to the function pointers with
//! arguments no wrapper would pass. Behaviour that must equal nginx's is in tests/oracle.rs.

mod support;

use std::time::Duration;

use support::*;

fn gateway(lua: &str) -> Gateway {
    let indented: String = lua.lines().map(|l| format!("        {l}\n")).collect();
    Gateway::start(
        "    lua_shared_dict:\n      t: 1m\n      tiny: 1k\n",
        &routes_file(&format!(
            "routes:\n  - id: c\n    uri: /c\n    lua_handlers:\n      content_by_lua: |\n{indented}"
        )),
    )
}

#[test]
fn get_headers_keeps_its_forms_past_the_fast_path_limits() {
    let gw = gateway(
        r#"
local function count(t) local n = 0 for _, v in pairs(t) do n = n + (type(v) == "table" and #v or 1) end return n end
-- 150 distinct headers more than the scratch list holds (128): the raw function's path.
for i = 1, 150 do ngx.req.set_header("x-h" .. i, tostring(i)) end
local t, trunc = ngx.req.get_headers()
ngx.say("default ", count(t), " ", tostring(trunc))
t, trunc = ngx.req.get_headers(0)
ngx.say("all ", count(t) >= 150, " ", tostring(trunc), " ", t.x_h150, " ", t["X-H7"])
t, trunc = ngx.req.get_headers(3)
ngx.say("three ", count(t), " ", tostring(trunc))
-- A negative or NaN max is the default, 100, on both paths (past 128 headers the raw
-- function's, under it the fast path's).
t, trunc = ngx.req.get_headers(-1)
ngx.say("negative ", count(t), " ", tostring(trunc))
for i = 111, 150 do ngx.req.set_header("x-h" .. i, nil) end
t, trunc = ngx.req.get_headers(0 / 0)
local t2, trunc2 = ngx.req.get_headers(-3)
ngx.say("negative fast ", count(t), " ", tostring(trunc), " ", count(t2), " ", tostring(trunc2))
-- A value bigger than the scratch bytes (32 KiB).
for i = 1, 150 do ngx.req.set_header("x-h" .. i, nil) end
ngx.req.set_header("x-big", string.rep("b", 40000))
t = ngx.req.get_headers()
ngx.say("big ", #t["x-big"], " ", t.x_rep[1], t.x_rep[2], t.x_rep[3])
-- Hostile and unusual arguments read as the raw function reads them.
for _, a in ipairs({ 0 / 0, -5, 1e300, 2.5, "7", {} }) do
  local h, tr = ngx.req.get_headers(a, "yes")
  ngx.say("arg ", type(a), " ", count(h), " ", tostring(tr), " ", tostring(getmetatable(h) ~= nil))
end
local r = ngx.req.get_headers(nil, true)
ngx.say("raw ", r["X-Rep"][2], " ", tostring(r["x-rep"]), " ", tostring(getmetatable(r)))
"#,
    );
    let r = request(
        gw.port,
        "GET",
        "/c",
        &[("X-Rep", "1"), ("X-Rep", "2"), ("x-rep", "3")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines[0], "default 100 truncated");
    assert_eq!(lines[1], "all true nil 150 7");
    assert_eq!(lines[2], "three 3 truncated");
    assert_eq!(lines[3], "negative 100 truncated");
    assert_eq!(lines[4], "negative fast 100 truncated 100 truncated");
    assert_eq!(lines[5], "big 40000 123");
    // As OpenResty reads `max` (a C int): NaN, a negative number and one past an int's range
    // are the default, 100 (the request has 6 header values here); 2.5 is 2. A string or a
    // table is the default too (OpenResty raises an error converting them). Any true value
    // (here "yes") asks for raw names: no metatable.
    assert_eq!(
        &lines[6..12],
        [
            "arg number 6 nil false",
            "arg number 6 nil false",
            "arg number 6 nil false",
            "arg number 2 truncated false",
            "arg string 6 nil false",
            "arg table 6 nil false",
        ]
    );
    assert_eq!(lines[12], "raw 2 nil nil");
}

#[test]
fn fast_paths_fail_as_the_raw_functions_do_without_a_request() {
    let gw = gateway(
        r#"
local out = {}
local function try(name, f)
  local ok, err = pcall(f)
  out[#out + 1] = name .. " " .. tostring(ok) .. " " .. tostring(err)
end
local done = false
ngx.timer.at(0, function()
  try("get_headers", function() return ngx.req.get_headers() end)
  try("set_header", function() ngx.req.set_header("X-A", "1") end)
  try("header", function() ngx.header["X-A"] = 1 end)
  try("first", function() return require("moongate.headers").first("host") end)
  -- Shared dictionaries work in timers.
  try("incr", function() return ngx.shared.t:incr("in-timer", 1, 41) end)
  done = true
end)
while not done do ngx.sleep(0.01) end
ngx.say(table.concat(out, "\n"))
"#,
    );
    let r = gw.get("/c");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(
        r.body,
        "get_headers false API disabled in the context of ngx.timer (ngx.req.get_headers)\n\
         set_header false API disabled in the context of ngx.timer (ngx.req.set_header)\n\
         header false API disabled in the context of ngx.timer (ngx.header)\n\
         first false API disabled in the context of ngx.timer (ngx.req.get_headers)\n\
         incr true 42\n"
    );
}

#[test]
fn the_entry_points_are_sound_when_called_directly() {
    // A plugin can reach the function pointers (here through `debug`) and call them with any
    // argument; they answer or refuse, and the worker keeps serving.
    let gw = gateway(
        r#"
local f
for i = 1, 20 do
  local name, v = debug.getupvalue(ngx.req.get_headers, i)
  if name == nil then break end
  if name == "c_get_headers" then f = v end
end
ngx.say(type(f))
for _, a in ipairs({ 0 / 0, -1e308, 1e308, 0, 1 }) do
  local list = f(a, -7)
  ngx.say(list ~= nil and list.count >= 1 and list.count <= 128)
end
local done
ngx.timer.at(0, function() done = f(100, 0) == nil end)
while done == nil do ngx.sleep(0.01) end
ngx.say("timer ", done)
"#,
    );
    let r = gw.get("/c");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.body, "cdata\ntrue\ntrue\ntrue\ntrue\ntrue\ntimer true\n");
    wait_until("a second request", Duration::from_secs(5), || {
        gw.get("/c").status == 200
    });
}

#[test]
fn setters_first_and_incr_keep_every_form() {
    let gw = gateway(
        r##"
local function all(...)
  local o = {}
  for i = 1, select("#", ...) do o[i] = tostring((select(i, ...))) end
  return table.concat(o, ",")
end
-- Nothing is sent before the end: ngx.header is only writable until output starts.
local lines = {}
local function say(s) lines[#lines + 1] = s end
local first = require("moongate.headers").first
ngx.req.set_header("X-S", "a")
ngx.req.set_header("X-N", 42)
ngx.req.set_header("X-F", 1.5)
ngx.req.set_header("X-B", true)
ngx.req.set_header("X-L", { "1", 2 })
ngx.req.set_header("X-Gone", "")
ngx.req.set_header("X-Client", nil)
ngx.req.set_header("Host", "Example.COM:8080")
local t = ngx.req.get_headers()
say(all(t.x_s, t.x_n, t.x_f, t.x_b, t.x_l[1], t.x_l[2], t.x_gone, t.x_client, ngx.var.host))
say(all(first("x-s"), first("X_N"), first("x_l"), first("x-client"), first("host")))
ngx.req.clear_header("x-s")
say(all(first("x-s"), ngx.req.get_headers().x_s))
for _, v in ipairs({ "a\r\nb", function() end }) do
  say(all(pcall(ngx.req.set_header, "X-Bad", v)))
end
say(all(pcall(ngx.req.set_header, "Bad Name", "v")))
say(all(pcall(first, 5)))
ngx.header["X-R"] = "r"
ngx.header.x_num = 7
ngx.header["X-M"] = { "1", "2" }
ngx.header["X-Del"] = "d"
ngx.header["X-Del"] = nil
ngx.header.X_Empty = "e"
ngx.header.X_Empty = ""
say(all(pcall(function() ngx.header["X-Bad"] = "a\nb" end)))
say(all(ngx.header.x_r, ngx.header["X-Num"], rawget(ngx.header, "X-R")))
local d, tiny = ngx.shared.t, ngx.shared.tiny
say(all(d:incr("k", 1)))
say(all(d:incr("k", 1, 10)))
say(all(d:incr("k", 2)))
say(all(d:incr("k", 0.5, 100, 10)))
d:set("s", "x")
say(all(d:incr("s", 1)))
say(all(d:incr("", 1)))
say(all(d:incr(5, 1, 0)))
say(all(d:incr("k", "x")))
say(all(pcall(d.incr, {}, "k", 1)))
say(all(tiny:incr(string.rep("k", 2000), 1, 0)))
say(all(d:incr("ttl", 1, 0, 0.05)))
ngx.sleep(0.1)
say(all(d:get("ttl")))
ngx.say(table.concat(lines, "\n"))
"##,
    );
    let r = request(gw.port, "GET", "/c", &[("X-Client", "c")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(
        lines,
        [
            "a,42,1.5,true,1,2,nil,nil,example.com:8080",
            "a,42,1,nil,Example.COM:8080",
            "nil,nil",
            "false,ngx.req.set_header: invalid header value",
            "false,ngx.req.set_header: bad header value type: userdata",
            "false,ngx.req.set_header: invalid header name \"Bad Name\"",
            "false,bad argument #1 to 'first' (string expected, got number)",
            "false,ngx.header: invalid header value",
            "r,7,nil",
            "nil,not found",
            "11,nil,false",
            "13",
            "13.5,nil,false",
            "nil,not a number",
            "nil,empty key",
            "1,nil,false",
            "nil,cannot add or subtract a non-number",
            "false,bad \"zone\" argument: call the methods as dict:method(...)",
            "nil,no memory,false",
            "1,nil,false",
            "nil",
        ]
    );
    let values = |name: &str| -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-r"), ["r"]);
    assert_eq!(values("x-num"), ["7"]);
    assert_eq!(values("x-m"), ["1", "2"]);
    assert!(values("x-del").is_empty());
    assert!(values("x-empty").is_empty());
}

#[test]
fn known_header_names_and_the_clock_come_through_the_fast_paths_unchanged() {
    // `get_headers` hands names it knows as ready-made strings: the table reads the same,
    // repeated known names stay lists, and raw (capitalised) names are made from their bytes.
    // `ngx.now()`/`ngx.time()` read the clock through the FFI: seconds since the epoch with
    // milliseconds, and its whole part.
    let gw = gateway(
        r#"
local t = ngx.req.get_headers()
ngx.say(t.host, " ", t["User-Agent"], " ", t.accept[1], ",", t.accept[2], " ", t.x_other)
local r = ngx.req.get_headers(0, true)
ngx.say(tostring(r.Host), " ", tostring(r.host), " ", r["User-Agent"])
local now, time = ngx.now(), ngx.time()
ngx.say(string.format("%.3f", now), " ", time, " ", now * 1000 % 1 == 0,
  " ", time == math.floor(now) or time == math.floor(now) + 1)
"#,
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = request(
        gw.port,
        "GET",
        "/c",
        &[
            ("Host", "known.test"),
            ("User-Agent", "ua/1"),
            ("Accept", "a/1"),
            ("Accept", "a/2"),
            ("X-Other", "o"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines[0], "known.test ua/1 a/1,a/2 o");
    assert_eq!(lines[1], "known.test nil ua/1");
    let clock: Vec<&str> = lines[2].split(' ').collect();
    let now: f64 = clock[0].parse().unwrap();
    assert!(
        (now - before).abs() < 5.0,
        "ngx.now() {now}, system {before}"
    );
    // Read just after `now`: the same second, or the next one if it began in between.
    let time: f64 = clock[1].parse().unwrap();
    assert!(
        time == now.floor() || time == now.floor() + 1.0,
        "{}",
        lines[2]
    );
    assert_eq!(&clock[2..], ["true", "true"], "{}", lines[2]);
}

#[test]
fn the_config_version_comes_through_the_fast_path_and_moves_with_the_config() {
    // `moongate.config.version()` (what apisix.consumer keys its tables on) is read through the
    // FFI: a number, the same within one config, greater once something Lua reads changes (a
    // consumer is added).
    let handler = "local v = require(\"moongate.config\").version()\nngx.say(type(v), \" \", v)";
    let gw = gateway(handler);
    let read = || {
        let r = gw.get("/c");
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
        let (kind, v) = r.body.trim().split_once(' ').unwrap_or(("", ""));
        assert_eq!(kind, "number", "{}", r.body);
        v.parse::<f64>().unwrap_or(-1.0)
    };
    let first = read();
    assert!(first >= 0.0, "{first}");
    assert_eq!(read(), first);
    let indented: String = handler.lines().map(|l| format!("        {l}\n")).collect();
    gw.write_routes(&routes_file(&format!(
        "routes:\n  - id: c\n    uri: /c\n    lua_handlers:\n      content_by_lua: |\n{indented}consumers:\n  - username: jack\n"
    )));
    wait_until("the new config", Duration::from_secs(10), || read() > first);
}

#[test]
fn setters_keep_working_for_names_past_their_id_tables() {
    // The setters know names by an id Rust gives once per name (1,024 kept per setter in Lua,
    // 4,096 per worker in Rust); names past either take the raw function and still work. A
    // name seen before keeps its behaviour: the same value set, the same error raised.
    let gw = gateway(
        r##"
local first = require("moongate.headers").first
-- Output last: ngx.header is only writable until output starts.
ngx.header.X_Resp_Under = "2"
ngx.header["X-Many-4999"] = "late"
local lines = {}
local ok = 0
for i = 1, 5000 do
  local name = "X-Many-" .. i
  ngx.req.set_header(name, "v" .. i)
  if first(name) == "v" .. i then ok = ok + 1 end
  ngx.req.set_header(name, nil)
  if first(name) == nil then ok = ok + 1 end
end
lines[1] = ok
for _ = 1, 2 do
  lines[#lines + 1] = tostring(select(2, pcall(ngx.req.set_header, "Bad Name", "v")))
end
ngx.req.set_header("X_Under", "1")
lines[#lines + 1] = tostring(first("x_under")) .. " " .. tostring(first("x-under"))
ngx.say(table.concat(lines, "\n"))
"##,
    );
    let r = gw.get("/c");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(
        lines,
        [
            "10000",
            "ngx.req.set_header: invalid header name \"Bad Name\"",
            "ngx.req.set_header: invalid header name \"Bad Name\"",
            "1 nil",
        ]
    );
    // ngx.header reads `_` as `-`; ngx.req.set_header keeps it.
    assert_eq!(r.header("x-resp-under"), Some("2"));
    assert_eq!(r.header("x-many-4999"), Some("late"));
}
