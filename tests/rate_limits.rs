//! Rate limiting through the real binary: moongate's own `resty.limit.req`, `resty.limit.conn`,
//! `resty.limit.count` and `resty.limit.traffic` over `ngx.shared` dicts, and two fixture
//! plugins written to APISIX's contract (`t/fixtures/plugins/fixture-quota.lua`, a fixed
//! window counter like limit-count, locally and in a real Redis; `fixture-inflight.lua`,
//! requests in flight like limit-conn).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use support::redis::RedisServer;
use support::*;

const QUOTA: &str = include_str!("../t/fixtures/plugins/fixture-quota.lua");
const INFLIGHT: &str = include_str!("../t/fixtures/plugins/fixture-inflight.lua");

/// Indents Lua source under a YAML block scalar.
fn block(lua: &str) -> String {
    lua.lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>()
}

/// A gateway whose route `/t` runs `lua` as `content_by_lua`.
fn lua_gateway(lua: &str) -> Gateway {
    let port = free_port();
    let routes = format!(
        "routes:\n  - id: t\n    uri: /t\n    lua_handlers:\n      content_by_lua: |\n{}",
        block(lua)
    );
    Gateway::start_with_config(&config_yaml(port, ""), port, &routes_file(&routes))
}

fn body_of(gw: &Gateway, path: &str) -> String {
    let r = gw.get(path);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    r.body.clone()
}

/// A gateway with the fixture plugins enabled and `resources` (YAML) as its config.
fn plugin_gateway(resources: &str) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - fixture-quota\n  - fixture-inflight\n",
        config_yaml(port, "")
    );
    Gateway::start_with_files(
        &config,
        port,
        &routes_file(resources),
        &[
            ("lua/plugins/fixture-quota.lua", QUOTA),
            ("lua/plugins/fixture-inflight.lua", INFLIGHT),
        ],
    )
}

#[test]
fn limit_req_delays_requests_within_the_burst_and_rejects_beyond_it() {
    // 0.01 requests per second: the bucket drains so slowly that time between the calls does
    // not show in the rounded figures.
    let gw = lua_gateway(
        r#"
local limit_req = require("resty.limit.req")
ngx.say("no dict: ", select(2, limit_req.new("no-such-dict", 1, 1)))
local lim = assert(limit_req.new("plugin-limit-req", 0.01, 2))
local function try(key, commit)
    local delay, excess = lim:incoming(key, commit)
    if not delay then
        return "nil " .. excess
    end
    return math.ceil(delay) .. "s excess " .. math.ceil(excess)
end
for i = 1, 4 do
    ngx.say("request ", i, ": ", try("k", true))
end
ngx.say("dry runs do not count: ", try("fresh", false), ", ", try("fresh", false))
ngx.say("uncommit: ", tostring(lim:uncommit("k")), ", then ", try("k", false))
ngx.say("uncommit unknown: ", select(2, lim:uncommit("unknown")))
lim:set_burst(3)
ngx.say("bigger burst: ", try("k", true))
lim:set_rate(0.02)
ngx.say("faster rate: ", try("k", false))
"#,
    );
    assert_eq!(
        body_of(&gw, "/t"),
        "no dict: shared dict not found\n\
         request 1: 0s excess 0\n\
         request 2: 100s excess 1\n\
         request 3: 200s excess 2\n\
         request 4: nil rejected\n\
         dry runs do not count: 0s excess 0, 0s excess 0\n\
         uncommit: true, then 200s excess 2\n\
         uncommit unknown: not found\n\
         bigger burst: 200s excess 2\n\
         faster rate: 150s excess 3\n"
    );
}

#[test]
fn limit_conn_counts_requests_in_flight_until_they_leave() {
    let gw = lua_gateway(
        r#"
local limit_conn = require("resty.limit.conn")
local lim = assert(limit_conn.new("plugin-limit-conn", 2, 1, 0.5))
local dict = ngx.shared["plugin-limit-conn"]
local function try(commit)
    local delay, conn = lim:incoming("k", commit)
    if not delay then
        return "nil " .. conn
    end
    return delay .. "s #" .. conn .. (lim:is_committed() and " committed" or "")
end
for i = 1, 4 do
    ngx.say("request ", i, ": ", try(true))
end
ngx.say("in flight: ", dict:get("k"))
ngx.say("leaving: ", lim:leaving("k"))
ngx.say("dry run: ", try(false), ", in flight: ", dict:get("k"))
-- a slow request teaches the limiter a longer unit delay: (0.5 + 1.5) / 2
ngx.say("leaving after 1.5s: ", lim:leaving("k", 1.5))
ngx.say("again: ", try(true), ", ", try(true))
ngx.say("uncommit: ", lim:uncommit("k"))
lim:set_conn(3)
lim:set_burst(0)
ngx.say("bigger conn: ", try(true), ", ", try(true))
"#,
    );
    assert_eq!(
        body_of(&gw, "/t"),
        "request 1: 0s #1 committed\n\
         request 2: 0s #2 committed\n\
         request 3: 0.5s #3 committed\n\
         request 4: nil rejected\n\
         in flight: 3\n\
         leaving: 2\n\
         dry run: 0.5s #3, in flight: 2\n\
         leaving after 1.5s: 1\n\
         again: 0s #2 committed, 1s #3 committed\n\
         uncommit: 2\n\
         bigger conn: 0s #3 committed, nil rejected\n"
    );
}

#[test]
fn limit_count_counts_a_fixed_window_and_combine_records_only_what_all_admit() {
    let gw = lua_gateway(
        r#"
local limit_count = require("resty.limit.count")
local lim = assert(limit_count.new("plugin-limit-count", 2, 60))
local function try(key, commit, cost)
    local delay, consumed = lim:incoming(key, commit, cost)
    if not delay then
        return "nil " .. consumed
    end
    return delay .. " consumed " .. consumed
end
for i = 1, 3 do
    ngx.say("request ", i, ": ", try("k", true))
end
ngx.say("window: ", math.ceil(ngx.shared["plugin-limit-count"]:ttl("k")), "s")
ngx.say("uncommit: ", lim:uncommit("k"))
ngx.say("peek: ", try("other", false, 0), ", cost 2: ", try("other", true, 2),
    ", cost 1 more: ", try("other", true, 1))
ngx.say("version ", limit_count._VERSION)

local traffic = require("resty.limit.traffic")
local req = assert(require("resty.limit.req").new("plugin-limit-req", 0.01, 5))
local one = assert(limit_count.new("plugin-limit-count", 1, 60))
local states = {}
local delay, err = traffic.combine({ one, req }, { "c", "c" }, states)
ngx.say("combine 1: ", delay, " states ", states[1], ",", states[2])
delay, err = traffic.combine({ one, req }, { "c", "c" }, states)
ngx.say("combine 2: ", tostring(delay), " ", err)
-- the rejected request left no trace in the request-rate limiter: one request recorded
local d = req:incoming("c", false)
ngx.say("req limiter saw ", math.ceil(d / 100), " request(s) before this one")
"#,
    );
    assert_eq!(
        body_of(&gw, "/t"),
        "request 1: 0 consumed 1\n\
         request 2: 0 consumed 2\n\
         request 3: nil rejected\n\
         window: 60s\n\
         uncommit: 2\n\
         peek: 0 consumed 0, cost 2: 0 consumed 2, cost 1 more: nil rejected\n\
         version 1.2.0\n\
         combine 1: 0 states 1,0\n\
         combine 2: nil rejected\n\
         req limiter saw 1 request(s) before this one\n"
    );
}

fn quota_headers(r: &Resp) -> (u16, String, String) {
    (
        r.status,
        r.header("x-quota-remaining").unwrap_or("-").to_string(),
        r.header("x-quota-key").unwrap_or("-").to_string(),
    )
}

#[test]
fn a_fixed_window_plugin_counts_per_resource_in_a_shared_dict() {
    let echo = Echo::start("e");
    let gw = plugin_gateway(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n\
         services:\n  - id: s1\n    upstream_id: e\n    plugins:\n      fixture-quota: {{count: 1, window: 60}}\n\
         routes:\n\
         \x20 - id: r1\n    uri: /one\n    upstream_id: e\n    plugins:\n      fixture-quota: {{count: 2, window: 60}}\n\
         \x20 - id: r2\n    uri: /two\n    upstream_id: e\n    plugins:\n      fixture-quota: {{count: 2, window: 60}}\n\
         \x20 - id: r3\n    uri: /three\n    service_id: s1\n",
        echo.port
    ));
    let one: Vec<_> = (0..3).map(|_| quota_headers(&gw.get("/one"))).collect();
    let key = "/apisix/routes/r1:127.0.0.1".to_string();
    assert_eq!(
        one,
        vec![
            (200, "1".into(), key.clone()),
            (200, "0".into(), key.clone()),
            (429, "0".into(), key),
        ],
        "{}",
        gw.error_log()
    );
    // Same conf on another route: its own counter.
    assert_eq!(
        quota_headers(&gw.get("/two")),
        (200, "1".into(), "/apisix/routes/r2:127.0.0.1".into())
    );
    // A conf inherited from a service counts under the service.
    let three: Vec<_> = (0..2).map(|_| quota_headers(&gw.get("/three"))).collect();
    let skey = "/apisix/services/s1:127.0.0.1".to_string();
    assert_eq!(
        three,
        vec![(200, "0".into(), skey.clone()), (429, "0".into(), skey)]
    );
}

#[test]
fn a_fixed_window_plugin_counts_in_redis() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let echo = Echo::start("e");
    let gw = plugin_gateway(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n\
         routes:\n\
         \x20 - id: r1\n    uri: /one\n    upstream_id: e\n    plugins:\n      fixture-quota: {{count: 2, window: 60, policy: redis, redis_host: 127.0.0.1, redis_port: {}, redis_password: pw, redis_database: 1}}\n",
        echo.port, redis.port
    ));
    let codes: Vec<_> = (0..3).map(|_| quota_headers(&gw.get("/one")).0).collect();
    assert_eq!(codes, vec![200, 200, 429], "{}", gw.error_log());
    // The counter lives in Redis database 1, with the window as its time to live.
    let key = "/apisix/routes/r1:127.0.0.1";
    let count = redis_in_db(&redis, 1, &["GET", key]);
    assert_eq!(count, "$1\r\n3\r\n");
    let ttl = redis_in_db(&redis, 1, &["TTL", key]);
    let secs: i64 = ttl
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("TTL reply {ttl:?}"));
    assert!((1..=60).contains(&secs), "ttl {secs}");
}

/// `args` run in database `db` of the password-protected server (one connection).
fn redis_in_db(redis: &RedisServer, db: u32, args: &[&str]) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmds = vec![vec!["AUTH", "pw"]];
    let db = db.to_string();
    cmds.push(vec!["SELECT", &db]);
    cmds.push(args.to_vec());
    let mut wire = String::new();
    for cmd in &cmds {
        wire.push_str(&format!("*{}\r\n", cmd.len()));
        for a in cmd {
            wire.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    c.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    // "+OK\r\n+OK\r\n" then the reply; read until the reply is complete.
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(rest) = text.strip_prefix("+OK\r\n+OK\r\n")
            && (rest.starts_with(':') && rest.ends_with("\r\n")
                || rest.starts_with('$') && rest.matches("\r\n").count() >= 2)
        {
            return rest.to_string();
        }
        match c.read(&mut tmp) {
            Ok(0) | Err(_) => return text,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// A backend that holds every request for `hold` before answering 200, so requests stay in
/// flight meanwhile.
fn slow_backend(hold: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut tmp = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                std::thread::sleep(hold);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

#[test]
fn requests_in_flight_are_limited_and_let_go_in_the_log_phase() {
    let echo = Echo::start("e");
    let slow = slow_backend(Duration::from_secs(2));
    let gw = plugin_gateway(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n  - id: slow\n    nodes:\n      \"127.0.0.1:{slow}\": 1\n\
         routes:\n\
         \x20 - id: fast\n    uri: /fast\n    upstream_id: e\n    plugins:\n      fixture-inflight: {{conn: 1, burst: 0}}\n\
         \x20 - id: slow\n    uri: /slow\n    upstream_id: slow\n    plugins:\n      fixture-inflight: {{conn: 1, burst: 1, delay: 0.5}}\n",
        echo.port
    ));

    // Pipelined on one connection: each request's log phase ends before the next begins (as
    // nginx runs it), so one-at-a-time never trips a limit of one.
    let wire = "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4)
        + "GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = raw(gw.port, wire.as_bytes(), Duration::from_secs(10));
    let resps = parse_responses(&out);
    let codes: Vec<u16> = resps.iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![200; 5], "{}", gw.error_log());
    assert!(resps.iter().all(|r| r.header("x-inflight") == Some("1")));

    // Three at once against a backend that holds them: one passes, one passes with the delay
    // limit-conn would wait, the third is over conn + burst.
    let port = gw.port;
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 * i));
                request(port, "GET", "/slow", &[], b"")
            })
        })
        .collect();
    let mut results: Vec<(u16, String, String)> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            (
                r.status,
                r.header("x-inflight").unwrap_or("-").to_string(),
                r.header("x-delay").unwrap_or("-").to_string(),
            )
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        vec![
            (200, "1".into(), "0".into()),
            (200, "2".into(), "0.5".into()),
            (503, "-".into(), "-".into()),
        ],
        "{}",
        gw.error_log()
    );
    // All left: the next one is first again.
    wait_until("the slow requests to leave", Duration::from_secs(5), || {
        gw.get("/fast").status == 200
    });
    let r = request(port, "GET", "/slow", &[], b"");
    assert_eq!(r.header("x-inflight"), Some("1"));
}
