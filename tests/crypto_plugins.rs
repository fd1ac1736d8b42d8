//! The crypto libraries inside the real binary: a Lua plugin checks bearer JWTs with the calls
//! APISIX's jwt-auth makes, against tokens signed by the `openssl` CLI (an independent
//! implementation), for RS256 and HS256, and refuses tampered, wrongly keyed and malformed ones.

mod support;

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::*;

const TOKEN: &str = include_str!("../t/fixtures/plugins/fixture-token.lua");

/// Runs the openssl CLI (scripts/lib/deps.sh installs it) on `stdin`, returning stdout.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl CLI is installed (scripts/lib/deps.sh)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// `header.payload` for `alg` with the payload key `key`.
fn signing_input(alg: &str, key: &str) -> String {
    format!(
        "{}.{}",
        b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes()),
        b64url(format!(r#"{{"key":"{key}","exp":4102444800}}"#).as_bytes())
    )
}

fn get_with_token(gw: &Gateway, path: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    request(gw.port, "GET", path, &[("Authorization", &auth)], b"")
}

#[test]
fn jwt_auth_style_plugin_accepts_openssl_signed_tokens_and_refuses_bad_ones() {
    let keys = TempDir::new("crypto-keys");
    let private = keys.0.join("rsa.pem").display().to_string();
    let other = keys.0.join("other.pem").display().to_string();
    for out in [&private, &other] {
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                out,
            ],
            b"",
        );
    }
    let public = String::from_utf8(openssl(&["pkey", "-in", &private, "-pubout"], b"")).unwrap();

    let rs_input = signing_input("RS256", "alice");
    let rs_sig = openssl(&["dgst", "-sha256", "-sign", &private], rs_input.as_bytes());
    let rs_token = format!("{rs_input}.{}", b64url(&rs_sig));
    let wrong_sig = openssl(&["dgst", "-sha256", "-sign", &other], rs_input.as_bytes());
    let wrong_token = format!("{rs_input}.{}", b64url(&wrong_sig));
    let tampered_token = format!("{}.{}", signing_input("RS256", "mallory"), b64url(&rs_sig));

    let hs_input = signing_input("HS256", "bob");
    let hs_sig = openssl(
        &[
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            "key:s3cret",
            "-binary",
        ],
        hs_input.as_bytes(),
    );
    let hs_token = format!("{hs_input}.{}", b64url(&hs_sig));

    let echo = Echo::start("e");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-token\n", config_yaml(port, ""));
    let pem_json = serde_json::to_string(&public).unwrap();
    let routes = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: rs\n    uri: /rs\n    upstream_id: e\n    plugins:\n      fixture-token: {{alg: RS256, key: {pem_json}}}\n  - id: hs\n    uri: /hs\n    upstream_id: e\n    plugins:\n      fixture-token: {{alg: HS256, key: s3cret}}\n#END\n",
        echo.port
    );
    let gw = Gateway::start_with_files(
        &config,
        port,
        &routes,
        &[("lua/plugins/fixture-token.lua", TOKEN)],
    );

    let ok = get_with_token(&gw, "/rs", &rs_token);
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.error_log());
    assert_eq!(ok.json()["headers"]["x-token-key"].as_str(), Some("alice"));

    let ok = get_with_token(&gw, "/hs", &hs_token);
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.error_log());
    assert_eq!(ok.json()["headers"]["x-token-key"].as_str(), Some("bob"));

    for (path, token, why) in [
        ("/rs", &wrong_token, "signed by another key"),
        ("/rs", &tampered_token, "payload changed after signing"),
        ("/hs", &rs_token, "RS256 token on an HS256 route"),
    ] {
        let r = get_with_token(&gw, path, token);
        assert_eq!(r.status, 401, "{why}: {r:?}");
    }
    let r = get_with_token(&gw, "/rs", &format!("invalid-{rs_token}"));
    assert_eq!(r.status, 401);
    let first = rs_input.split('.').next().unwrap();
    assert!(
        r.body.contains(&format!(
            "JWT token invalid: invalid header: invalid-{first}"
        )),
        "{}",
        r.body
    );
    let r = get_with_token(&gw, "/hs", "a.b");
    assert!(r.body.contains("invalid jwt string"), "{}", r.body);
}
