//! The native `uri-blocker`, `ip-restriction`, `referer-restriction` and `redirect` plugins
//! through the real binary, configured from the standalone YAML file as APISIX users write them;
//! their conf errors refuse the file; a Lua file of the same name overrides the native one.

mod support;

use support::*;

fn gateway(echo: &Echo, routes: &str, files: &[(&str, &str)]) -> Gateway {
    let port = free_port();
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n{routes}\n#END\n",
        echo.port
    );
    Gateway::start_with_files(&config_yaml(port, ""), port, &yaml, files)
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(gw.port, "GET", path, headers, b"")
}

#[test]
fn uri_blocker_refuses_matching_request_uris_with_its_code_and_message() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "routes:\n  - id: msg\n    uri: /m/*\n    upstream_id: e\n    plugins:\n      uri-blocker:\n        block_rules: [\"\\\\.php$\", \"^/m/admin\"]\n        rejected_msg: access is not allowed\n  - id: plain\n    uri: /p/*\n    upstream_id: e\n    plugins:\n      uri-blocker:\n        block_rules: [\"secret\"]\n        rejected_code: 410\n        case_insensitive: true\n",
        &[],
    );
    let r = get(&gw, "/m/index.php", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, "{\"error_msg\":\"access is not allowed\"}\n");
    assert_eq!(get(&gw, "/m/admin/x", &[]).status, 403);
    // The rules see the query string too, as $request_uri has it.
    assert_eq!(get(&gw, "/m/x?f=a.php", &[]).status, 403);
    let ok = get(&gw, "/m/index.html", &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["uri"], "/m/index.html");
    // No message: nginx's page for the code; case_insensitive folds case.
    let r = get(&gw, "/p/SeCrEt", &[]);
    assert_eq!(r.status, 410);
    assert!(r.body.contains("410 Gone"), "{}", r.body);
    assert_eq!(get(&gw, "/p/open", &[]).status, 200);
    assert!(
        gw.error_log()
            .contains("uri-blocker exits with http status code 403")
    );
}

#[test]
fn ip_restriction_allows_and_denies_by_cidr() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "routes:\n  - id: allow\n    uri: /allow\n    upstream_id: e\n    plugins:\n      ip-restriction:\n        whitelist: [\"127.0.0.0/8\", \"::1\"]\n  - id: deny\n    uri: /deny\n    upstream_id: e\n    plugins:\n      ip-restriction:\n        blacklist: [\"10.0.0.0/8\", \"127.0.0.1\"]\n        message: go away\n        response_code: 404\n  - id: other\n    uri: /other\n    upstream_id: e\n    plugins:\n      ip-restriction:\n        whitelist: [\"192.168.0.0/16\", \"2001:db8::/32\"]\n",
        &[],
    );
    assert_eq!(get(&gw, "/allow", &[]).status, 200);
    let r = get(&gw, "/deny", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "{\"message\":\"go away\"}\n")
    );
    let r = get(&gw, "/other", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"Your IP address is not allowed\"}\n")
    );
}

#[test]
fn referer_restriction_matches_exact_and_wildcard_hosts() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "routes:\n  - id: w\n    uri: /w\n    upstream_id: e\n    plugins:\n      referer-restriction:\n        whitelist: [\"*.example.com\", \"trusted.test\"]\n  - id: b\n    uri: /b\n    upstream_id: e\n    plugins:\n      referer-restriction:\n        blacklist: [\"evil.test\"]\n        bypass_missing: true\n        message: no hotlinking\n",
        &[],
    );
    let with = |path: &str, referer: &str| get(&gw, path, &[("Referer", referer)]).status;
    assert_eq!(with("/w", "http://a.example.com/page"), 200);
    assert_eq!(with("/w", "https://trusted.test:8443/x"), 200);
    assert_eq!(with("/w", "http://example.com/"), 403);
    assert_eq!(with("/w", "http://other.test/"), 403);
    let r = get(&gw, "/w", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"Your referer host is not allowed\"}\n")
    );
    // A Referer that is no URL counts as missing.
    assert_eq!(with("/w", "garbage"), 403);
    assert_eq!(with("/b", "http://fine.test/"), 200);
    assert_eq!(get(&gw, "/b", &[]).status, 200);
    let r = get(&gw, "/b", &[("Referer", "http://evil.test/x")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"no hotlinking\"}\n")
    );
}

#[test]
fn redirect_builds_the_location_from_variables_regexes_and_the_query() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "routes:\n  - id: u\n    uri: /old/*\n    upstream_id: e\n    plugins:\n      redirect:\n        uri: \"/new$uri?h=${host}\"\n        ret_code: 301\n  - id: q\n    uri: /q\n    upstream_id: e\n    plugins:\n      redirect:\n        uri: /target\n        append_query_string: true\n  - id: re\n    uri: /re/*\n    upstream_id: e\n    plugins:\n      redirect:\n        regex_uri: [\"^/re/(\\\\w+)/go$\", \"/went/$1\"]\n  - id: tls\n    uri: /tls\n    upstream_id: e\n    plugins:\n      redirect:\n        http_to_https: true\n  - id: enc\n    uri: /enc\n    upstream_id: e\n    plugins:\n      redirect:\n        uri: \"/a b?x=1 2\"\n        encode_uri: true\n",
        &[],
    );
    let r = get(&gw, "/old/x", &[("Host", "shop.test")]);
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("/new/old/x?h=shop.test"));
    assert!(r.body.contains("301 Moved Permanently"), "{}", r.body);
    let r = get(&gw, "/q?a=1&b=2", &[]);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/target?a=1&b=2"))
    );
    assert_eq!(get(&gw, "/q", &[]).header("location"), Some("/target"));
    let r = get(&gw, "/re/abc/go", &[]);
    assert_eq!((r.status, r.header("location")), (302, Some("/went/abc")));
    // No match: no redirect, the request is proxied.
    let r = get(&gw, "/re/abc/stay", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/re/abc/stay");
    let r = get(&gw, "/tls?z=1", &[("Host", "secure.test")]);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://secure.test/tls?z=1"))
    );
    let r = request(gw.port, "POST", "/tls", &[("Host", "secure.test")], b"x");
    assert_eq!(r.status, 308);
    // A client outside `apisix.trusted_addresses` cannot claim https: its X-Forwarded-Proto
    // is replaced by what this hop saw before plugins run, as APISIX 3.18 replaces it.
    assert_eq!(
        get(&gw, "/tls", &[("X-Forwarded-Proto", "https")]).status,
        301
    );
    assert_eq!(
        get(&gw, "/enc", &[]).header("location"),
        Some("/a%20b?x=1 2")
    );
}

#[test]
fn redirect_to_https_takes_the_port_from_plugin_attr() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = plugin_attr(
        &config_yaml(port, ""),
        "  redirect:\n    https_port: 8443\n",
    );
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: tls\n    uri: /tls\n    upstream_id: e\n    plugins:\n      redirect:\n        http_to_https: true\n#END\n",
        echo.port
    );
    let gw = Gateway::start_with_files(&config, port, &yaml, &[]);
    let r = get(&gw, "/tls?z=1", &[("Host", "secure.test")]);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://secure.test:8443/tls?z=1"))
    );
}

#[test]
fn a_bad_conf_refuses_the_route_file_in_apisix_words() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "routes:\n  - id: ok\n    uri: /ok\n    upstream_id: e\n",
        &[],
    );
    assert_eq!(get(&gw, "/ok", &[]).status, 200);
    gw.write_routes(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: bad\n    uri: /bad\n    upstream_id: e\n    plugins:\n      ip-restriction:\n        whitelist: [\"300.1.1.1\"]\n#END\n",
        echo.port
    ));
    let needle = "routes[id=bad]: plugins.ip-restriction: invalid ip address: 300.1.1.1";
    wait_until(needle, std::time::Duration::from_secs(5), || {
        gw.error_log().contains(needle)
    });
    // The previous routes keep serving.
    assert_eq!(get(&gw, "/ok", &[]).status, 200);
    assert_eq!(get(&gw, "/bad", &[]).status, 404);
}

#[test]
fn a_lua_file_of_the_same_name_overrides_the_native_plugin() {
    const LUA: &str = "local _M = {version = 0.1, priority = 2900, name = \"uri-blocker\",\n  schema = {type = \"object\"}}\nfunction _M.check_schema(conf) return true end\nfunction _M.rewrite(conf, ctx)\n  return 418, \"the Lua uri-blocker ran\"\nend\nreturn _M\n";
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        // A conf the native plugin would refuse (block_rules is required): the Lua one accepts it.
        "routes:\n  - id: r\n    uri: /x\n    upstream_id: e\n    plugins:\n      uri-blocker: {}\n",
        &[("lua/plugins/uri-blocker.lua", LUA)],
    );
    let r = get(&gw, "/x", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (418, "the Lua uri-blocker ran")
    );
}
