//! moongate's own Redis clients (`resty.redis`, `apisix.utils.redis`, `resty.redis.connector`)
//! driven from `content_by_lua` routes of the real binary against a real `redis-server`
//! started by the test (tests/support/redis.rs; the test fails if it is not installed).

mod support;

use support::redis::{RedisCluster, RedisServer};
use support::*;

/// Indents Lua source under a YAML block scalar.
fn block(lua: &str) -> String {
    lua.lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>()
}

/// A gateway whose route `/t` runs `lua` as `content_by_lua`; `REDIS_PORT` in the Lua is
/// replaced by the server's port.
fn gateway(redis: &RedisServer, lua: &str) -> Gateway {
    let port = free_port();
    let routes = format!(
        "routes:\n  - id: t\n    uri: /t\n    lua_handlers:\n      content_by_lua: |\n{}",
        block(&lua.replace("REDIS_PORT", &redis.port.to_string()))
    );
    Gateway::start_with_config(&config_yaml(port, ""), port, &routes_file(&routes))
}

fn body_of(gw: &Gateway) -> String {
    let r = gw.get("/t");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    r.body.clone()
}

/// `connect()` on a new client, as every route below starts.
const CONNECT: &str = r##"
local redis = require("resty.redis")
local function connect()
    local red = redis:new()
    red:set_timeouts(1000, 1000, 1000)
    local ok, err = red:connect("127.0.0.1", REDIS_PORT)
    assert(ok, err)
    return red
end
local function show(v)
    if v == nil then return "nil" end
    if v == ngx.null then return "null" end
    if type(v) == "table" then
        local parts = {}
        for i = 1, #v do parts[i] = show(v[i]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    return type(v) .. ":" .. tostring(v)
end
"##;

#[test]
fn replies_map_to_lua_values_as_lua_resty_redis_documents() {
    let redis = RedisServer::start();
    let gw = gateway(
        &redis,
        &format!(
            "{CONNECT}{}",
            r##"
local red = connect()
ngx.say("set ", show(red:set("dog", "an animal")))
ngx.say("get ", show(red:get("dog")))
ngx.say("missing ", show(red:get("cat")))
ngx.say("incr ", show(red:incr("n")), " ", show(red:incrby("n", 41)))
red:rpush("list", "a", "b", 3)
ngx.say("lrange ", show(red:lrange("list", 0, -1)))
ngx.say("empty ", show(red:lrange("nolist", 0, -1)))
local res, err = red:hget("dog", "x")
ngx.say("error ", show(res), " ", err)
red:hmset("h", {a = "1"})
red:hmset("h", "b", "2")
local h = red:array_to_hash(red:hgetall("h"))
ngx.say("hash ", h.a, h.b)
ngx.say("eval ", show(red:eval("return {KEYS[1], ARGV[1], 7, redis.call('get', 'nope')}", 1, "k", "v")))
local sha = red:script("load", "return ARGV[1]")
ngx.say("evalsha ", show(red:evalsha(sha, 0, "x")))
local _, nerr = red:evalsha("0000000000000000000000000000000000000000", 0)
ngx.say("noscript ", nerr:sub(1, 8))
ngx.say("any command ", show(red:config("get", "port")[1]))
ngx.say("multi ", show(red:multi()), " ", show(red:set("t", "1")), " ", show(red:exec()))
"##
        ),
    );
    assert_eq!(
        body_of(&gw),
        "set string:OK\n\
         get string:an animal\n\
         missing null\n\
         incr number:1 number:42\n\
         lrange [string:a,string:b,string:3]\n\
         empty []\n\
         error boolean:false WRONGTYPE Operation against a key holding the wrong kind of value\n\
         hash 12\n\
         eval [string:k,string:v,number:7,null]\n\
         evalsha string:x\n\
         noscript NOSCRIPT\n\
         any command string:port\n\
         multi string:OK string:QUEUED [string:OK]\n"
    );
    // What the gateway wrote is in Redis.
    assert_eq!(redis.command(None, &["GET", "dog"]), "$9\r\nan animal\r\n");
}

#[test]
fn pipelines_send_queued_commands_at_once_and_keep_errors_in_place() {
    let redis = RedisServer::start();
    let gw = gateway(
        &redis,
        &format!(
            "{CONNECT}{}",
            r##"
local red = connect()
local res, err = red:commit_pipeline()
ngx.say("without init ", show(res), " ", err)
red:init_pipeline()
ngx.say("queued returns ", select("#", red:set("cat", "Marry")))
red:get("cat")
red:lpush("cat", "x")
red:get("absent")
red:incr("counter")
local results = red:commit_pipeline()
ngx.say(#results, " ", show(results[1]), " ", show(results[2]), " ", show(results[3][1]),
    " ", results[3][2]:sub(1, 9), " ", show(results[4]), " ", show(results[5]))
red:init_pipeline()
red:set("cancelled", "1")
red:cancel_pipeline()
ngx.say("after cancel ", show(red:get("cancelled")))
"##
        ),
    );
    assert_eq!(
        body_of(&gw),
        "without init nil no pipeline\n\
         queued returns 0\n\
         5 string:OK string:Marry boolean:false WRONGTYPE null number:1\n\
         after cancel null\n"
    );
}

#[test]
fn connection_failures_and_auth_errors_come_back_as_nil_and_a_message() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let closed = free_port();
    let gw = gateway(
        &redis,
        &format!(
            "{CONNECT}{}",
            r##"
local red = redis.new()
red:set_timeout(500)
ngx.say("refused ", show(red:connect("127.0.0.1", CLOSED_PORT)), " ", select(2, red:connect("127.0.0.1", CLOSED_PORT)))
local red = connect()
local res, err = red:get("k")
ngx.say("no auth ", show(res), " ", err)
ngx.say("bad auth ", show(red:auth("nope")), " ", select(2, red:auth("nope")))
ngx.say("auth ", show(red:auth("s3cret")), " ", show(red:set("k", "v")))
red:set_timeouts(1000, 1000, 100)
local res, err = red:blpop("empty-list", 5)
ngx.say("read timeout ", show(res), " ", err)
red:close()
ngx.say("closed ", show(red:get("k")), " ", select(2, red:get("k")))
"##
            .replace("CLOSED_PORT", &closed.to_string())
        ),
    );
    assert_eq!(
        body_of(&gw),
        "refused nil connection refused\n\
         no auth boolean:false NOAUTH Authentication required.\n\
         bad auth boolean:false WRONGPASS invalid username-password pair or user is disabled.\n\
         auth string:OK string:OK\n\
         read timeout nil timeout\n\
         closed nil closed\n"
    );
}

#[test]
fn set_keepalive_returns_the_connection_for_the_next_client() {
    let redis = RedisServer::start();
    let gw = gateway(
        &redis,
        &format!(
            "{CONNECT}{}",
            r##"
local red = connect()
local id1 = red:client("id")
ngx.say("first reused ", red:get_reused_times())
ngx.say("keepalive ", show(red:set_keepalive(10000, 10)))
ngx.say("after keepalive ", show(red:get("k")), " ", select(2, red:get("k")))
local red2 = connect()
ngx.say("second reused ", red2:get_reused_times(), " same connection ", red2:client("id") == id1)
red2:set_keepalive(10000, 10)
-- a pool name keeps connections apart
local red3 = redis.new()
red3:connect("127.0.0.1", REDIS_PORT, {pool = "other"})
ngx.say("other pool reused ", red3:get_reused_times(), " same connection ", red3:client("id") == id1)
red3:close()
"##
        ),
    );
    assert_eq!(
        body_of(&gw),
        "first reused 0\n\
         keepalive number:1\n\
         after keepalive nil closed\n\
         second reused 1 same connection true\n\
         other pool reused 0 same connection false\n"
    );
}

#[test]
fn subscribed_clients_read_pushed_messages_and_stay_out_of_the_pool() {
    let redis = RedisServer::start();
    let gw = gateway(
        &redis,
        &format!(
            "{CONNECT}{}",
            r##"
local sub = connect()
ngx.say("not subscribed ", show(sub:read_reply()), " ", select(2, sub:read_reply()))
ngx.say("subscribe ", show(sub:subscribe("dog")))
ngx.say("two more ", show(sub:subscribe("cat", "cow")))
ngx.say("keepalive ", show(sub:set_keepalive()), " ", select(2, sub:set_keepalive()))
local pub = connect()
ngx.say("publish ", show(pub:publish("dog", "Hello")))
ngx.say("message ", show(sub:read_reply()))
ngx.say("unsubscribe one ", show(sub:unsubscribe("dog")))
local rest = sub:unsubscribe()
ngx.say("unsubscribe the rest ", #rest, " replies, last count ", rest[#rest][3])
ngx.say("not subscribed again ", select(2, sub:read_reply()))
ngx.say("keepalive now ", show(sub:set_keepalive()))
"##
        ),
    );
    assert_eq!(
        body_of(&gw),
        "not subscribed nil not subscribed\n\
         subscribe [string:subscribe,string:dog,number:1]\n\
         two more [[string:subscribe,string:cat,number:2],[string:subscribe,string:cow,number:3]]\n\
         keepalive nil subscribed state\n\
         publish number:1\n\
         message [string:message,string:dog,string:Hello]\n\
         unsubscribe one [string:unsubscribe,string:dog,number:2]\n\
         unsubscribe the rest 2 replies, last count 0\n\
         not subscribed again not subscribed\n\
         keepalive now number:1\n"
    );
}

#[test]
fn apisix_utils_redis_logs_in_and_selects_only_on_fresh_connections() {
    let redis = RedisServer::start_with(&[
        "--user",
        "alice",
        "on",
        ">somepassword",
        "~*",
        "&*",
        "+@all",
    ]);
    let gw = gateway(
        &redis,
        r##"
local new = require("apisix.utils.redis").new
local conf = {
    redis_host = "127.0.0.1", redis_port = REDIS_PORT, redis_timeout = 1000,
    redis_username = "alice", redis_password = "somepassword", redis_database = 3,
}
local red, err = new(conf)
assert(red, err)
ngx.say("fresh ", red:get_reused_times(), " ", red:set("k", "db3"))
red:set_keepalive(10000, 10)
local again = new(conf)
ngx.say("reused ", again:get_reused_times(), " ", again:get("k"))
again:set_keepalive(10000, 10)
-- database 0 is another pool, so its connection did not SELECT 3
conf.redis_database = 0
local other = new(conf)
ngx.say("db0 ", other:get_reused_times(), " ", other:get("k") == ngx.null)
other:close()
local bad, berr = new({redis_host = "127.0.0.1", redis_port = REDIS_PORT, redis_timeout = 1000,
    redis_username = "alice", redis_password = "wrong", redis_database = 0})
ngx.say("wrong password ", tostring(bad), " ", berr)
"##,
    );
    assert_eq!(
        body_of(&gw),
        "fresh 0 OK\n\
         reused 1 db3\n\
         db0 0 true\n\
         wrong password nil WRONGPASS invalid username-password pair or user is disabled.\n"
    );
    assert_eq!(
        redis.command(Some(&["alice", "somepassword"]), &["SELECT", "3"]),
        "+OK\r\n"
    );
}

#[test]
fn the_connector_reaches_redis_by_host_and_by_url() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let gw = gateway(
        &redis,
        r##"
local connector = require("resty.redis.connector")
local rc = connector.new({host = "127.0.0.1", port = REDIS_PORT, password = "pw", db = 2,
    connect_timeout = 500, read_timeout = 1000})
local red, err = rc:connect()
assert(red, err)
ngx.say("by host ", red:set("k", "v2"))
rc:set_keepalive(red)
local red2, err2 = rc:connect({url = "redis://pw@127.0.0.1:REDIS_PORT/2"})
assert(red2, err2)
ngx.say("by url ", red2:get("k"))
red2:close()
local _, uerr = connector.new({url = "nonsense"})
ngx.say("bad url ", uerr)
local none, nerr, previous = connector.new({sentinels = {{host = "127.0.0.1", port = 1},
    {host = "127.0.0.1", port = 2}}, connect_timeout = 200}):connect()
ngx.say("no sentinel ", tostring(none), " ", nerr, " ", previous[1], " ", previous[2])
"##,
    );
    assert_eq!(
        body_of(&gw),
        "by host OK\n\
         by url v2\n\
         bad url could not parse the connection URL: nonsense\n\
         no sentinel nil no hosts available connection refused connection refused\n"
    );
}

#[test]
fn the_cluster_client_routes_by_slot_follows_moved_and_splits_pipelines() {
    let cluster = RedisCluster::start(3);
    let p0 = cluster.nodes[0].port;
    let port = free_port();
    let lua_set = r##"
local cluster = require("resty.rediscluster")
local red = assert(cluster:new({name = "c1", serv_list = {{ip = "127.0.0.1", port = P0}},
    connect_timeout = 1000, read_timeout = 1000, send_timeout = 1000}))
local key
for i = 1, 500000 do
    if cluster.key_slot("k" .. i) == 0 then key = "k" .. i break end
end
assert(red:set(key, "v1"))
for i = 1, 30 do assert(red:set("spread" .. i, i)) end
red:init_pipeline()
for i = 1, 30 do red:get("spread" .. i) end
red:set("{user1}.a", "A")
red:get("{user1}.a")
local res = assert(red:commit_pipeline())
ngx.say(key)
ngx.say(table.concat(res, ",", 1, 30), " ", res[31], " ", res[32])
ngx.say("eval ", red:eval("return redis.call('get', KEYS[1])", 1, key))
ngx.say("hash tags ", cluster.key_slot("{user1}.a") == cluster.key_slot("{user1}.b"))
-- five requests' first use of another cluster name at once: one fetches the slot map, the
-- others wait for it
local threads = {}
for i = 1, 5 do
    threads[i] = ngx.thread.spawn(function()
        local c, e = cluster:new({name = "c2", serv_list = {{ip = "127.0.0.1", port = P0}}})
        if not c then return e end
        return c:get(key)
    end)
end
local got = {}
for i = 1, 5 do
    local _, v = ngx.thread.wait(threads[i])
    got[i] = v
end
ngx.say("concurrent first use ", table.concat(got, ","))
"##
    .replace("P0", &p0.to_string());
    let lua_get = r##"
local key = ngx.var.arg_key
local plain = require("resty.redis").new()
plain:connect("127.0.0.1", P0)
local _, moved = plain:get(key)
ngx.say("old node: ", moved:match("^MOVED 0 "))
plain:close()
local red = assert(require("resty.rediscluster"):new({name = "c1",
    serv_list = {{ip = "127.0.0.1", port = P0}}}))
ngx.say("through the cluster client: ", red:get(key))
"##
    .replace("P0", &p0.to_string());
    let routes = format!(
        "routes:\n  - id: set\n    uri: /set\n    lua_handlers:\n      content_by_lua: |\n{}  - id: get\n    uri: /get\n    lua_handlers:\n      content_by_lua: |\n{}",
        block(&lua_set),
        block(&lua_get)
    );
    let gw = Gateway::start_with_config(&config_yaml(port, ""), port, &routes_file(&routes));
    let body = body_of_path(&gw, "/set");
    let mut lines = body.lines();
    let key = lines.next().unwrap().to_string();
    let expected: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    assert_eq!(
        lines.next(),
        Some(format!("{} OK A", expected.join(",")).as_str())
    );
    assert_eq!(lines.next(), Some("eval v1"));
    assert_eq!(lines.next(), Some("hash tags true"));
    assert_eq!(lines.next(), Some("concurrent first use v1,v1,v1,v1,v1"));
    // The keys went to every master.
    for node in &cluster.nodes {
        let size = node.command(None, &["DBSIZE"]);
        assert_ne!(size.trim(), ":0", "a node got no key");
    }

    // Move slot 0 (with the key) to the second node; the gateway's cached slot map is stale.
    let (from, to) = (cluster.node_id(0), cluster.node_id(1));
    cluster.cli(&[
        "reshard",
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        "1",
        "--cluster-yes",
    ]);
    cluster.wait_ok();
    assert_eq!(
        cluster.nodes[1].command(None, &["GET", &key]),
        "$2\r\nv1\r\n",
        "reshard did not move slot 0 to the second node"
    );
    assert_eq!(
        body_of_path(&gw, &format!("/get?key={key}")),
        "old node: MOVED 0 \nthrough the cluster client: v1\n"
    );
}

fn body_of_path(gw: &Gateway, path: &str) -> String {
    let r = gw.get(path);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    r.body.clone()
}

#[test]
fn the_connector_finds_the_master_through_sentinels_and_keeps_pools_apart() {
    let master = RedisServer::start_with(&["--user", "app", "on", ">pw", "~*", "&*", "+@all"]);
    let open_sentinel = RedisServer::sentinel(master.port, "");
    let dir = TempDir::new("sentinel-acl");
    let acl = dir.0.join("sentinel.acl");
    std::fs::write(&acl, "user admin on >admin-pw +@all\nuser default off\n").unwrap();
    let locked_sentinel =
        RedisServer::sentinel(master.port, &format!("aclfile {}\n", acl.display()));
    let lua = r##"
local connector = require("resty.redis.connector")
local function via(sentinel_port, extra)
    local params = {sentinels = {{host = "127.0.0.1", port = sentinel_port}},
        master_name = "mymaster", role = "master", connect_timeout = 500}
    for k, v in pairs(extra or {}) do params[k] = v end
    return connector.new(params):connect()
end
local red, err = via(OPEN, {username = "app", password = "pw", db = 2})
assert(red, err)
ngx.say("master db 2: ", red:set("k", "in db 2"))
red:set_keepalive()
-- another database, same credentials: another pool, so SELECT runs for it
local red3 = assert(via(OPEN, {username = "app", password = "pw", db = 3}))
ngx.say("db 3 sees: ", red3:get("k") == ngx.null and "null" or "a value", ", reused ", red3:get_reused_times())
red3:set_keepalive()
local again = assert(via(OPEN, {username = "app", password = "pw", db = 2}))
ngx.say("db 2 again: ", again:get("k"), ", reused ", again:get_reused_times())
again:set_keepalive()
local none, nerr = via(LOCKED)
ngx.say("locked sentinel without credentials: ", tostring(none), " ", nerr)
local ok = via(LOCKED, {sentinel_username = "admin", sentinel_password = "admin-pw",
    username = "app", password = "pw", db = 2})
ngx.say("with credentials: ", ok:get("k"))
local _, werr = via(OPEN, {username = "app", password = "wrong"})
ngx.say("wrong password: ", werr)
local _, merr = via(OPEN, {master_name = "nosuch"})
ngx.say("unknown master: ", merr)
"##
    .replace("OPEN", &open_sentinel.port.to_string())
    .replace("LOCKED", &locked_sentinel.port.to_string());
    let gw = gateway(&master, &lua);
    assert_eq!(
        body_of(&gw),
        "master db 2: OK\n\
         db 3 sees: null, reused 0\n\
         db 2 again: in db 2, reused 1\n\
         locked sentinel without credentials: nil NOAUTH Authentication required.\n\
         with credentials: in db 2\n\
         wrong password: no hosts available\n\
         unknown master: invalid master name nosuch\n"
    );
}
