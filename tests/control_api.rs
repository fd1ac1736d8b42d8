//! The control API (`apisix.control`, `/v1/*`) and plugins' `api()` endpoints, through the real
//! binary: the built-in endpoints over the running snapshot, a plugin's `control_api()` routes
//! with a request context, `enable_control: false`, the plugin reload, and `api()` routes reached
//! through a route carrying a public-api-like plugin.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const CTL: &str = include_str!("../t/fixtures/plugins/fixture-ctl.lua");
const PUBLIC: &str = include_str!("../t/fixtures/plugins/fixture-public.lua");

/// A gateway whose control API listens on its own free port; `control` is extra YAML under
/// `apisix.control`, `extra` extra top-level YAML.
struct Node {
    gw: Gateway,
    control: u16,
}

impl Node {
    fn start(control: &str, extra: &str, routes: &str) -> Node {
        let port = free_port();
        let cport = free_port();
        let config = config_yaml(port, "").replace(
            "  enable_control: false\n",
            &format!("  control:\n    ip: 127.0.0.1\n    port: {cport}\n{control}"),
        );
        let config = format!(
            "{config}plugins:\n  - request-id\n  - fixture-ctl\n  - fixture-public\n{extra}"
        );
        let gw = Gateway::start_with_files(
            &config,
            port,
            routes,
            &[
                ("lua/plugins/fixture-ctl.lua", CTL),
                ("lua/plugins/fixture-public.lua", PUBLIC),
            ],
        );
        Node { gw, control: cport }
    }

    fn ctl(&self, method: &str, path: &str) -> Resp {
        request(self.control, method, path, &[], b"")
    }

    fn ctl_json(&self, path: &str) -> Value {
        let r = self.ctl("GET", path);
        assert_eq!(r.status, 200, "{path}: {r:?}\n{}", self.gw.error_log());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        r.json()
    }
}

const ROUTES: &str = "upstreams:
  - id: u1
    nodes:
      \"127.0.0.1:1980\": 1
      \"localhost:1981\": 2
services:
  - id: s1
    upstream_id: u1
    plugins:
      fixture-ctl: {}
routes:
  - id: r1
    uris: [/hello]
    upstream:
      nodes:
        \"127.0.0.1:1980\": 1
  - id: r2
    uri: /svc
    service_id: s1
  - id: off
    uri: /off
    status: 0
    upstream_id: u1
  - id: api
    uri: /apisix/plugin/*
    plugins:
      fixture-public: {}
    upstream_id: u1
  - id: alias
    uri: /hello-alias
    plugins:
      fixture-public:
        uri: /apisix/plugin/fixture-ctl/hello
    upstream_id: u1
plugin_metadata:
  - id: fixture-ctl
#END
";

#[test]
fn built_in_endpoints_show_the_running_snapshot() {
    let node = Node::start("", "", ROUTES);

    let routes = node.ctl_json("/v1/routes");
    let ids: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["r1", "r2", "off", "api", "alias"],
        "every configured route, disabled ones too, in config order"
    );
    let r1 = node.ctl_json("/v1/route/r1");
    assert_eq!(r1["key"], "/routes/r1");
    assert_eq!(r1["value"]["uris"], json!(["/hello"]));
    assert_eq!(r1["value"]["priority"], 0, "route defaults filled in");
    assert_eq!(r1["value"]["status"], 1);
    let up = &r1["value"]["upstream"];
    assert_eq!(
        up["nodes"],
        json!([{"host": "127.0.0.1", "port": 1980, "weight": 1}]),
        "nodes as the data plane holds them"
    );
    assert_eq!(
        (&up["type"], &up["hash_on"], &up["pass_host"], &up["scheme"]),
        (
            &json!("roundrobin"),
            &json!("vars"),
            &json!("pass"),
            &json!("http")
        )
    );
    assert_eq!(up["resource_key"], "/routes/r1");
    assert_eq!(r1["has_domain"], false);

    let missing = node.ctl("GET", "/v1/route/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, "{\"error_msg\":\"route[nope] not found\"}\n");

    let services = node.ctl_json("/v1/services");
    assert_eq!(services.as_array().unwrap().len(), 1);
    let s1 = node.ctl_json("/v1/service/s1");
    assert_eq!(s1["value"]["upstream_id"], "u1");
    assert_eq!(
        s1["value"]["plugins"]["fixture-ctl"]["note"], "none",
        "plugin confs shown with the defaults their check fills in"
    );
    assert_eq!(node.ctl("GET", "/v1/service/s2").status, 404);

    let u1 = node.ctl_json("/v1/upstream/u1");
    assert_eq!(
        u1["value"]["nodes"],
        json!([
            {"host": "127.0.0.1", "port": 1980, "weight": 1},
            {"host": "localhost", "port": 1981, "weight": 2}
        ])
    );
    assert_eq!(u1["has_domain"], true, "a node is a host name");
    assert_eq!(node.ctl_json("/v1/upstreams").as_array().unwrap().len(), 1);

    // No health checker exists: APISIX's answers for that case.
    let hc = node.ctl("GET", "/v1/healthcheck");
    assert_eq!((hc.status, hc.body.as_str()), (200, "{}\n"));
    let hc = node.ctl("GET", "/v1/healthcheck/routes/r1");
    assert_eq!(hc.status, 404);
    assert_eq!(hc.body, "{\"error_msg\":\"no checker for routes[r1]\"}\n");
    let hc = node.ctl("GET", "/v1/healthcheck/upstreams/zz");
    assert_eq!(hc.body, "{\"error_msg\":\"upstreams[zz] not found\"}\n");
    let hc = node.ctl("GET", "/v1/healthcheck/route/r1");
    assert_eq!(hc.status, 400);
    assert_eq!(hc.body, "{\"error_msg\":\"invalid src type route\"}\n");

    let md = node.ctl_json("/v1/plugin_metadata/fixture-ctl");
    assert_eq!(
        md,
        json!({"id": "fixture-ctl", "level": 3}),
        "metadata checked with the metadata schema, default filled"
    );
    assert_eq!(
        node.ctl_json("/v1/plugin_metadatas"),
        json!([{"id": "fixture-ctl", "level": 3}])
    );
    let none = node.ctl("GET", "/v1/plugin_metadata/fixture-public");
    assert_eq!(
        (none.status, none.body.as_str()),
        (
            404,
            "{\"error_msg\":\"plugin metadata[fixture-public] not found\"}\n"
        )
    );

    let schema = node.ctl_json("/v1/schema");
    for kind in ["route", "service", "upstream", "consumer", "ssl", "plugins"] {
        assert!(schema["main"][kind].is_object(), "main.{kind}");
    }
    let ctl = &schema["plugins"]["fixture-ctl"];
    assert_eq!(
        (&ctl["priority"], &ctl["version"], &ctl["type"]),
        (&json!(7), &json!(0.2), &json!("fixture"))
    );
    assert_eq!(ctl["schema"]["properties"]["note"]["default"], "none");
    assert_eq!(
        ctl["metadata_schema"]["properties"]["level"]["type"],
        "integer"
    );
    assert!(
        ctl["schema"]["properties"]["_meta"].is_object(),
        "the injected _meta is part of the schema"
    );
    assert_eq!(schema["plugins"]["request-id"]["priority"], 12015);
    assert!(
        schema["plugins"].get("uri-blocker").is_none(),
        "only enabled plugins"
    );

    assert_eq!(node.ctl("POST", "/v1/gc").status, 200);
    // A method the route does not take, and paths nothing takes: nginx's 404.
    for (method, path) in [
        ("GET", "/v1/gc"),
        ("POST", "/v1/routes"),
        ("GET", "/v1/nothing"),
        ("GET", "/other"),
        ("GET", "/v1/plugin/fixture-ctl/items/7"),
    ] {
        let r = node.ctl(method, path);
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
        assert!(r.body.contains("<h1>404 Not Found</h1>"), "{r:?}");
    }

    // The dumps follow the config as it changes.
    node.gw.write_routes(
        "routes:\n  - id: fresh\n    uri: /fresh\n    upstream:\n      nodes:\n        \"127.0.0.1:1980\": 1\n#END\n",
    );
    wait_until(
        "the new routes in /v1/routes",
        Duration::from_secs(5),
        || {
            let r = node.ctl("GET", "/v1/routes");
            r.body.contains("\"fresh\"") && !r.body.contains("\"r1\"")
        },
    );
    assert_eq!(node.ctl("GET", "/v1/route/r1").status, 404);
    let empty = node.ctl("GET", "/v1/upstreams");
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (200, "{}\n"),
        "no upstreams: an empty object, as APISIX encodes it"
    );
}

#[test]
fn a_plugin_control_api_answers_with_the_request_context() {
    let node = Node::start("", "", ROUTES);
    let r = request(
        node.control,
        "POST",
        "/v1/plugin/fixture-ctl/info?name=jack",
        &[("X-Probe", "p1")],
        b"the body",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", node.gw.error_log());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "uri": "/v1/plugin/fixture-ctl/info",
            "method": "POST",
            "name": "jack",
            "body": "the body",
            "header": "p1",
            "same_ctx": true
        })
    );
    let r = node.ctl("GET", "/v1/plugin/fixture-ctl/greeting");
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    assert_eq!(
        node.ctl("PUT", "/v1/plugin/fixture-ctl/info").status,
        404,
        "a method the route does not list"
    );
    // Without radixtree_uri_with_parameter, `:id` is literal text.
    assert_eq!(
        node.ctl("GET", "/v1/plugin/fixture-ctl/items/:id").status,
        200
    );
    assert!(
        !node.gw.error_log().contains("[error]"),
        "{}",
        node.gw.error_log()
    );
}

#[test]
fn uri_parameters_match_with_the_parameter_router() {
    let node = Node::start("    router: radixtree_uri_with_parameter\n", "", ROUTES);
    let r = node.ctl("GET", "/v1/plugin/fixture-ctl/items/42");
    assert_eq!(r.status, 200, "{r:?}\n{}", node.gw.error_log());
    assert_eq!(r.json(), json!({"item": "42"}));
    assert_eq!(node.ctl("GET", "/v1/plugin/fixture-ctl/items/").status, 404);
    assert_eq!(
        node.ctl("GET", "/v1/plugin/fixture-ctl/items/4/2").status,
        404
    );
}

#[test]
fn enable_control_false_leaves_the_port_closed() {
    let port = free_port();
    let cport = free_port();
    let config = config_yaml(port, "").replace(
        "  enable_control: false\n",
        &format!("  enable_control: false\n  control:\n    port: {cport}\n"),
    );
    let gw = Gateway::start_with_config(&config, port, ROUTES_PLAIN);
    assert_eq!(
        gw.get("/v1/routes").status,
        404,
        "not on the data port either"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", cport)).is_err(),
        "nothing listens on the control port"
    );
    assert!(
        !gw.stderr().contains("control API"),
        "the start line names no control API: {}",
        gw.stderr()
    );
}

const ROUTES_PLAIN: &str = "routes:\n  - id: 1\n    uri: /x\n    upstream:\n      nodes:\n        \"127.0.0.1:1\": 1\n#END\n";

#[test]
fn the_control_api_can_answer_under_v1_on_the_data_port() {
    let node = Node::start("    serve_on_data_port: true\n", "", ROUTES);
    let r = node.gw.get("/v1/route/r2");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["value"]["service_id"], "s1");
    assert!(
        node.gw.get("/hello-alias").status == 200,
        "other paths are still the proxy's"
    );
}

#[test]
fn a_control_port_taken_by_node_listen_is_refused() {
    let port = free_port();
    let config = config_yaml(port, "").replace(
        "  enable_control: false\n",
        &format!("  control:\n    port: {port}\n"),
    );
    let dir = TempDir::new("ctl-conflict");
    std::fs::write(dir.0.join("conf/config.yaml"), config).unwrap();
    std::fs::write(dir.0.join("conf/apisix.yaml"), ROUTES_PLAIN).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "-p"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("control port {port} conflicts with node_listen")),
        "{err}"
    );
}

#[test]
fn plugins_reload_through_the_control_api() {
    let node = Node::start("", "", ROUTES);
    assert_eq!(
        node.ctl("GET", "/v1/plugin/fixture-ctl/greeting").body,
        "hello"
    );
    let file = node.gw.dir.0.join("lua/plugins/fixture-ctl.lua");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "local GREETING = \"hello\"",
            "local GREETING = \"reloaded\"",
        ),
    )
    .unwrap();
    assert_eq!(
        node.ctl("GET", "/v1/plugin/fixture-ctl/greeting").body,
        "hello",
        "nothing changes before the reload"
    );
    assert_eq!(
        node.ctl("GET", "/v1/plugins/reload").status,
        404,
        "only PUT reloads, as APISIX"
    );
    let r = node.ctl("PUT", "/v1/plugins/reload");
    assert_eq!((r.status, r.body.as_str()), (200, "done"), "{r:?}");
    wait_until("the reloaded plugin", Duration::from_secs(5), || {
        node.ctl("GET", "/v1/plugin/fixture-ctl/greeting").body == "reloaded"
    });
    let log = node.gw.error_log();
    assert!(log.contains("start to hot reload plugins"), "{log}");
    assert!(log.contains("load plugin times: 2"), "{log}");
}

#[test]
fn plugin_apis_are_reached_through_a_public_api_route() {
    let node = Node::start("", "", ROUTES);
    let gw = &node.gw;
    let r = gw.get("/apisix/plugin/fixture-ctl/hello?name=ann");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, "{\"hello\":\"ann\"}\n");

    // A prefix API, a method list, the request context in the handler.
    let r = request(
        gw.port,
        "PUT",
        "/apisix/plugin/fixture-ctl/echo/a/b?name=x",
        &[("X-Probe", "p2")],
        b"payload",
    );
    assert_eq!(r.status, 201, "{r:?}\n{}", gw.error_log());
    assert_eq!(
        r.json(),
        json!({
            "uri": "/apisix/plugin/fixture-ctl/echo/a/b",
            "method": "PUT",
            "name": "x",
            "body": "payload",
            "header": "p2",
            "same_ctx": true
        })
    );
    assert_eq!(
        request(
            gw.port,
            "GET",
            "/apisix/plugin/fixture-ctl/echo/a",
            &[],
            b""
        )
        .status,
        404,
        "GET is not one of that API's methods"
    );

    let r = gw.get("/apisix/plugin/fixture-ctl/text");
    assert_eq!((r.status, r.body.as_str()), (202, "plain text\n"));
    assert_ne!(r.header("content-type"), Some("application/json"));

    let r = gw.get("/apisix/plugin/fixture-ctl/silent");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "printed by the handler\n");
    assert_eq!(r.header("x-silent"), Some("yes"));

    // No API for the uri: the public-api-like plugin answers 404.
    let r = gw.get("/apisix/plugin/nobody/here");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "{\"error_msg\":\"no plugin API here\"}\n");

    // The plugin's conf names the API instead of the request's uri.
    let r = gw.get("/hello-alias?name=bo");
    assert_eq!((r.status, r.body.as_str()), (200, "{\"hello\":\"bo\"}\n"));

    // Without a route carrying the plugin, the API is not reachable.
    let node2 = Node::start(
        "",
        "",
        "routes:\n  - id: 1\n    uri: /x\n    upstream:\n      nodes:\n        \"127.0.0.1:1\": 1\n#END\n",
    );
    let r = node2.gw.get("/apisix/plugin/fixture-ctl/hello");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "{\"error_msg\":\"404 Route Not Found\"}\n");
}
