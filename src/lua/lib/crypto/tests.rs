//! The crypto modules driven from Lua in a real VM, with keys generated in the test by the
//! `openssl` CLI and signatures cross-checked against it in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lua::vm::{LuaVm, VmOptions};

fn vm() -> LuaVm {
    LuaVm::new(&VmOptions::for_prefix(Path::new("/nonexistent"))).expect("VM starts")
}

/// Runs a Lua chunk; it fails the test with its own message when an `assert` trips.
fn run(vm: &LuaVm, code: &str) {
    if let Err(e) = vm.lua().load(code).exec() {
        panic!("Lua failed: {e}");
    }
}

/// A scratch directory for keys and signatures, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "moongate-crypto-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the openssl CLI (scripts/lib/deps.sh installs it) and returns its stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is installed (scripts/lib/deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `openssl` accepts the signature (exit status, not output).
fn openssl_ok(args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

fn set_global_file(vm: &LuaVm, name: &str, path: &str) {
    let bytes = std::fs::read(path).unwrap();
    let s = vm.lua().create_string(bytes).unwrap();
    vm.lua().globals().set(name, s).unwrap();
}

#[test]
fn hmac_faces_match_rfc4231_vectors() {
    let vm = vm();
    run(
        &vm,
        r#"
        local to_hex = require("resty.string").to_hex
        local hmac = require("resty.hmac")
        local mac = require("resty.openssl.mac")
        local ohmac = require("resty.openssl.hmac")
        local key1, data1 = string.rep("\11", 20), "Hi There"
        local tc1_256 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        local tc1_512 = "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
            .. "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
        local tc2_256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        local tc2_384 = "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
            .. "8e2240ca5e69e2c78b3239ecfab21649"

        -- lua-resty-hmac, called as hmac-auth calls it
        assert(to_hex(hmac:new(key1, hmac.ALGOS.SHA256):final(data1)) == tc1_256)
        assert(hmac:new(key1, hmac.ALGOS.SHA512):final(data1, true) == tc1_512)
        local h = hmac:new("Jefe", hmac.ALGOS.SHA256)
        assert(h:update("what do ya ") == true)
        assert(h:final("want for nothing?", true) == tc2_256)
        assert(h:reset() == true)
        assert(h:final("what do ya want for nothing?", true) == tc2_256, "reset keeps the key")

        -- resty.openssl.mac, called as jwt-auth's parser calls it
        assert(to_hex(mac.new("Jefe", "HMAC", nil, "sha384"):final("what do ya want for nothing?")) == tc2_384)
        local m = mac.new(key1, "HMAC", nil, "sha256")
        assert(m:update("Hi ", "There"))
        assert(to_hex(m:final()) == tc1_256)
        local none, err = mac.new("k", "HMAC", nil, "nosuch")
        assert(none == nil and err == "mac.new: invalid cipher or digest type", err)

        -- resty.openssl.hmac
        assert(to_hex(ohmac.new("Jefe", "sha256"):final("what do ya want for nothing?")) == tc2_256)
        local none2, err2 = ohmac.new("k", "whirl")
        assert(none2 == nil and err2 == 'hmac.new: invalid digest type "whirl"', err2)

        -- hmac-auth's sha1 path uses ngx.hmac_sha1: the same bytes as resty.hmac's SHA1
        assert(hmac:new("key", hmac.ALGOS.SHA1):final("msg") == ngx.hmac_sha1("key", "msg"))
        -- an unknown algorithm is a clear error, never a silent default
        assert(not pcall(hmac.new, hmac, "k", "sha3"))
        "#,
    );
}

#[test]
fn digests_match_the_openssl_cli_and_report_bad_names_as_the_original() {
    let scratch = Scratch::new("digest");
    let file = scratch.path("data");
    std::fs::write(&file, b"the quick brown fox").unwrap();
    let vm = vm();
    for alg in ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"] {
        let out = String::from_utf8(openssl(&["dgst", &format!("-{alg}"), "-hex", &file])).unwrap();
        let expected = out.rsplit("= ").next().unwrap().trim().to_string();
        run(
            &vm,
            &format!(
                r#"
                local digest = require("resty.openssl.digest")
                local to_hex = require("resty.string").to_hex
                local d = assert(digest.new({alg}))
                assert(d:update("the quick ", "brown") and d:update(" fox"))
                local got = to_hex(d:final())
                assert(got == {expected}, {alg} .. ": " .. got)
                d:reset()
                assert(to_hex(d:final("the quick brown fox")) == {expected})
                "#,
                alg = lua_str(alg),
                expected = lua_str(&expected),
            ),
        );
    }
    run(
        &vm,
        r#"
        local digest = require("resty.openssl.digest")
        local none, err = digest.new("sha3-999")
        assert(none == nil and err == 'digest.new: invalid digest type "sha3-999"', err)
        -- sha1 when no type is given, as lua-resty-openssl does
        assert(#digest.new():final("x") == 20)
        assert(digest.istype(digest.new("SHA256")) and not digest.istype({}))
        "#,
    );
}

/// Generates an RSA key with the CLI: PKCS#8 private, PKCS#1 private, SPKI public.
fn rsa_keys(scratch: &Scratch, bits: &str, name: &str) -> (String, String, String) {
    let pkcs8 = scratch.path(&format!("{name}.pem"));
    let pkcs1 = scratch.path(&format!("{name}-pkcs1.pem"));
    let public = scratch.path(&format!("{name}.pub"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-out",
        &pkcs8,
    ]);
    openssl(&["rsa", "-in", &pkcs8, "-traditional", "-out", &pkcs1]);
    openssl(&["pkey", "-in", &pkcs8, "-pubout", "-out", &public]);
    (pkcs8, pkcs1, public)
}

#[test]
fn rs_and_ps_signatures_verify_both_ways_against_openssl() {
    let scratch = Scratch::new("rsa");
    let (pkcs8, pkcs1, public) = rsa_keys(&scratch, "2048", "rsa");
    let (other, _, _) = rsa_keys(&scratch, "2048", "other");
    let data = scratch.path("data");
    std::fs::write(&data, b"eyJhbGciOiJSUzI1NiJ9.eyJrZXkiOiJ1c2VyLWtleSJ9").unwrap();
    let vm = vm();
    set_global_file(&vm, "PRIV8", &pkcs8);
    set_global_file(&vm, "PRIV1", &pkcs1);
    set_global_file(&vm, "PUB", &public);
    set_global_file(&vm, "OTHER", &other);
    set_global_file(&vm, "DATA", &data);

    for (md, pss) in [
        ("sha256", false),
        ("sha384", false),
        ("sha512", false),
        ("sha256", true),
        ("sha384", true),
        ("sha512", true),
    ] {
        // Ours signs, openssl verifies.
        let sig_file = scratch.path(&format!("ours-{md}-{pss}.sig"));
        run(
            &vm,
            &format!(
                r#"
                local pkey = require("resty.openssl.pkey")
                local digest = require("resty.openssl.digest")
                local md, pss = {md}, {pss}
                local sig
                if pss then
                    sig = assert(pkey.new(PRIV8):sign(DATA, md, pkey.PADDINGS.RSA_PKCS1_PSS_PADDING))
                else
                    local d = digest.new(md)
                    assert(d:update(DATA))
                    sig = assert(pkey.new(PRIV1):sign(d))
                end
                assert(#sig == 256, #sig)
                local f = assert(io.open({sig_file}, "wb")); f:write(sig); f:close()

                local pad = pss and pkey.PADDINGS.RSA_PKCS1_PSS_PADDING or nil
                local pub = assert(pkey.new(PUB))
                assert(pub:is_private() == false)
                assert(pub:verify(sig, DATA, md, pad) == true, "own signature verifies")
                local ok, err = pub:verify(sig, DATA .. "x", md, pad)
                assert(ok == false and err, "tampered data fails")
                local flipped = string.char((sig:byte(1) + 1) % 256) .. sig:sub(2)
                assert(pub:verify(flipped, DATA, md, pad) == false, "tampered signature fails")
                local wrong = assert(pkey.new(OTHER))
                assert(wrong:verify(sig, DATA, md, pad) == false, "another key fails")
                "#,
                md = lua_str(md),
                pss = pss,
                sig_file = lua_str(&sig_file),
            ),
        );
        let mut args = vec![
            "dgst".to_string(),
            format!("-{md}"),
            "-verify".into(),
            public.clone(),
            "-signature".into(),
            sig_file.clone(),
        ];
        if pss {
            args.extend(
                [
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:auto",
                ]
                .map(String::from),
            );
        }
        args.push(data.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(
            openssl_ok(&argv),
            "openssl rejects our {md} pss={pss} signature"
        );

        // openssl signs (PSS with the longest salt, not the digest-length one), ours verifies.
        let theirs = scratch.path(&format!("theirs-{md}-{pss}.sig"));
        let mut args = vec![
            "dgst".to_string(),
            format!("-{md}"),
            "-sign".into(),
            pkcs8.clone(),
            "-out".into(),
            theirs.clone(),
        ];
        if pss {
            args.extend(
                [
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:max",
                ]
                .map(String::from),
            );
        }
        args.push(data.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(&argv);
        set_global_file(&vm, "THEIRS", &theirs);
        run(
            &vm,
            &format!(
                r#"
                local pkey = require("resty.openssl.pkey")
                local pad = {pss} and pkey.PADDINGS.RSA_PKCS1_PSS_PADDING or nil
                local ok, err = pkey.new(PUB):verify(THEIRS, DATA, {md}, pad)
                assert(ok == true, tostring(err))
                -- a private key verifies too (OpenSSL uses its public half)
                assert(pkey.new(PRIV1):verify(THEIRS, DATA, {md}, pad) == true)
                if {pss} then
                    -- an explicit salt length that the signature does not have fails
                    assert(pkey.new(PUB):verify(THEIRS, DATA, {md}, pad, {{pss_saltlen = 0}}) == false)
                end
                "#,
                md = lua_str(md),
                pss = pss,
            ),
        );
    }
}

#[test]
fn small_legacy_rsa_keys_load_as_apisix_test_suites_use_them() {
    // APISIX's jwt-auth suites carry 512- and 1024-bit keys; OpenSSL loads them, so must we.
    let scratch = Scratch::new("rsa-small");
    let (pkcs8, _, public) = rsa_keys(&scratch, "1024", "rsa");
    let vm = vm();
    set_global_file(&vm, "PRIV", &pkcs8);
    set_global_file(&vm, "PUB", &public);
    run(
        &vm,
        r#"
        local pkey = require("resty.openssl.pkey")
        local sig = assert(pkey.new(PRIV):sign("payload", "sha256"))
        assert(#sig == 128)
        assert(pkey.new(PUB):verify(sig, "payload", "sha256") == true)
        "#,
    );
}

#[test]
fn es_signatures_in_raw_and_der_form_verify_both_ways_against_openssl() {
    let scratch = Scratch::new("ec");
    let data = scratch.path("data");
    std::fs::write(&data, b"header.payload").unwrap();
    let vm = vm();
    set_global_file(&vm, "DATA", &data);
    for (curve, md, field) in [
        ("prime256v1", "sha256", 32),
        ("secp384r1", "sha384", 48),
        ("secp521r1", "sha512", 66),
    ] {
        let pkcs8 = scratch.path(&format!("{curve}.pem"));
        let sec1 = scratch.path(&format!("{curve}-sec1.pem"));
        let public = scratch.path(&format!("{curve}.pub"));
        let other = scratch.path(&format!("{curve}-other.pem"));
        for out in [&pkcs8, &other] {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                out,
            ]);
        }
        openssl(&["ec", "-in", &pkcs8, "-out", &sec1]);
        openssl(&["pkey", "-in", &pkcs8, "-pubout", "-out", &public]);
        set_global_file(&vm, "PRIV", &pkcs8);
        set_global_file(&vm, "SEC1", &sec1);
        set_global_file(&vm, "PUB", &public);
        set_global_file(&vm, "OTHER", &other);
        let der_file = scratch.path(&format!("{curve}-ours.der"));
        run(
            &vm,
            &format!(
                r#"
                local pkey = require("resty.openssl.pkey")
                assert(SEC1:find("BEGIN EC PRIVATE KEY"), "the CLI wrote SEC1")
                local md, field = {md}, {field}
                local raw_opts = {{ecdsa_use_raw = true}}
                -- jwt-auth's ES* calls
                for _, priv in ipairs({{PRIV, SEC1}}) do
                    local sig = assert(pkey.new(priv):sign(DATA, md, nil, raw_opts))
                    assert(#sig == 2 * field, #sig)
                    local pub = assert(pkey.new(PUB))
                    assert(pub:verify(sig, DATA, md, nil, raw_opts) == true)
                    assert(pub:verify(sig, DATA .. "!", md, nil, raw_opts) == false)
                    assert(pkey.new(OTHER):verify(sig, DATA, md, nil, raw_opts) == false)
                    local ok, err = pub:verify(sig:sub(2), DATA, md, nil, raw_opts)
                    assert(ok == nil and err == "pkey:sign: ecdsa.sig_raw2der: invalid signature length, expect "
                        .. 2 * field .. " but got " .. (2 * field - 1), err)
                end
                -- DER form (no ecdsa_use_raw), for openssl to check
                local der = assert(pkey.new(PRIV):sign(DATA, md))
                assert(der:byte(1) == 0x30, "DER SEQUENCE")
                local f = assert(io.open({der_file}, "wb")); f:write(der); f:close()
                "#,
                md = lua_str(md),
                field = field,
                der_file = lua_str(&der_file),
            ),
        );
        assert!(
            openssl_ok(&[
                "dgst",
                &format!("-{md}"),
                "-verify",
                &public,
                "-signature",
                &der_file,
                &data
            ]),
            "openssl rejects our {curve} signature"
        );
        let theirs = scratch.path(&format!("{curve}-theirs.der"));
        openssl(&[
            "dgst",
            &format!("-{md}"),
            "-sign",
            &pkcs8,
            "-out",
            &theirs,
            &data,
        ]);
        set_global_file(&vm, "THEIRS", &theirs);
        run(
            &vm,
            &format!(
                r#"
                local pkey = require("resty.openssl.pkey")
                assert(pkey.new(PUB):verify(THEIRS, DATA, {md}) == true)
                assert(pkey.new(PUB):verify(THEIRS, DATA .. "x", {md}) == false)
                "#,
                md = lua_str(md),
            ),
        );
    }
}

#[test]
fn ed25519_signatures_verify_both_ways_against_openssl() {
    let scratch = Scratch::new("ed25519");
    let private = scratch.path("ed.pem");
    let public = scratch.path("ed.pub");
    let data = scratch.path("data");
    let ours = scratch.path("ours.sig");
    let theirs = scratch.path("theirs.sig");
    std::fs::write(&data, b"eyJhbGciOiJFZERTQSJ9.eyJrZXkiOiJrIn0").unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &private]);
    openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    openssl(&[
        "pkeyutl", "-sign", "-rawin", "-inkey", &private, "-in", &data, "-out", &theirs,
    ]);
    let vm = vm();
    set_global_file(&vm, "PRIV", &private);
    set_global_file(&vm, "PUB", &public);
    set_global_file(&vm, "DATA", &data);
    set_global_file(&vm, "THEIRS", &theirs);
    run(
        &vm,
        &format!(
            r#"
            local pkey = require("resty.openssl.pkey")
            local k = assert(pkey.new(PRIV))
            assert(k:get_key_type().sn == "ED25519")
            local sig = assert(k:sign(DATA))
            assert(#sig == 64)
            local f = assert(io.open({ours}, "wb")); f:write(sig); f:close()
            local pub = assert(pkey.new(PUB))
            assert(pub:verify(sig, DATA) == true)
            assert(pub:verify(THEIRS, DATA) == true, "openssl's signature verifies")
            assert(pub:verify(sig, DATA .. ".") == false)
            local other = assert(pkey.new({{type = "Ed25519"}}))
            assert(other:verify(sig, DATA) == false)
            -- a public key cannot sign, and says so
            local none, err = pub:sign(DATA)
            assert(none == nil and err == "pkey:sign: missing private key", err)
            "#,
            ours = lua_str(&ours),
        ),
    );
    assert!(
        openssl_ok(&[
            "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", &public, "-in", &data, "-sigfile",
            &ours
        ]),
        "openssl rejects our Ed25519 signature"
    );
}

#[test]
fn bad_keys_fail_with_lua_resty_openssl_wording() {
    let vm = vm();
    run(
        &vm,
        r#"
        local pkey = require("resty.openssl.pkey")
        local none, err = pkey.new("not a key")
        assert(none == nil)
        assert(err == "pkey.new:load_key: error:1E08010C:DECODER routines::unsupported", err)
        none, err = pkey.new("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
        assert(none == nil and err:find("^pkey.new:load_key: "), err)
        none, err = pkey.new("x", {format = "XML"})
        assert(none == nil and err == [[pkey.new:load_key: expecting 'DER', 'PEM', 'JWK' or '*' as "format"]], err)
        none, err = pkey.new(42)
        assert(none == nil and err == "pkey.new: unexpected type number at #1", err)
        -- what jwt-auth's verifier asserts on when a consumer's key is bad
        local ok, msg = pcall(function()
            local k = pkey.new("garbage")
            assert(k, "Consumer Public Key is Invalid")
        end)
        assert(not ok and msg:find("Consumer Public Key is Invalid"), msg)
        -- unsupported operations name themselves
        local k = assert(pkey.new({type = "EC", curve = "prime256v1"}))
        local ok2, msg2 = pcall(k.encrypt, k, "x")
        assert(not ok2 and msg2:find("pkey:encrypt%(%) is not supported by moongate"), msg2)
        local bad_md, md_err = k:sign("x", "nosuch")
        assert(bad_md == nil and md_err == 'pkey:sign_verify_prepare: invalid digest type "nosuch"', md_err)
        "#,
    );
}

#[test]
fn keys_round_trip_through_pem_der_and_jwk() {
    let scratch = Scratch::new("formats");
    let rsa = scratch.path("rsa.pem");
    let der = scratch.path("rsa.der");
    let pub_der = scratch.path("rsa.pub.der");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa,
    ]);
    openssl(&["pkey", "-in", &rsa, "-outform", "DER", "-out", &der]);
    openssl(&[
        "pkey", "-in", &rsa, "-pubout", "-outform", "DER", "-out", &pub_der,
    ]);
    let vm = vm();
    set_global_file(&vm, "RSA", &rsa);
    set_global_file(&vm, "DER", &der);
    set_global_file(&vm, "PUBDER", &pub_der);
    run(
        &vm,
        r#"
        local pkey = require("resty.openssl.pkey")
        local cjson = require("cjson")
        local rsa = assert(pkey.new(RSA))
        assert(rsa:is_private() and rsa:get_key_type().sn == "rsaEncryption")
        local from_der = assert(pkey.new(DER, {format = "DER"}))
        local pub_der = assert(pkey.new(PUBDER, {format = "DER", type = "pu"}))
        assert(pub_der:is_private() == false)
        -- a DER private key is refused when only public keys are asked for
        assert(pkey.new(DER, {format = "DER", type = "pu"}) == nil)
        local sig = assert(from_der:sign("m", "sha256"))
        assert(pub_der:verify(sig, "m", "sha256"))
        assert(rsa:to_PEM() == pub_der:to_PEM(), "same public key")

        local keys = {
            rsa,
            assert(pkey.new({type = "EC", curve = "prime256v1"})),
            assert(pkey.new({type = "EC", curve = "secp384r1"})),
            assert(pkey.new({type = "EC", curve = "secp521r1"})),
            assert(pkey.new({type = "Ed25519"})),
        }
        for i, k in ipairs(keys) do
            local md = k:get_key_type().sn ~= "ED25519" and "sha256" or nil
            local sig = assert(k:sign("msg", md))
            -- public and private JWK, then PEM, all load back and agree
            local jwk_pub = assert(k:tostring("public", "JWK"))
            local jwk_priv = assert(k:tostring("private", "JWK"))
            assert(cjson.decode(jwk_pub).d == nil and cjson.decode(jwk_priv).d ~= nil, i)
            if i == 1 then
                local members = cjson.decode(jwk_priv)
                for _, m in ipairs({"n", "e", "d", "p", "q", "dp", "dq", "qi"}) do
                    assert(members[m], "RSA JWK member " .. m)
                end
            end
            local pub = assert(pkey.new(jwk_pub, {format = "JWK"}))
            assert(pub:verify(sig, "msg", md) == true, "JWK public " .. i)
            local priv = assert(pkey.new(jwk_priv))
            assert(pub:verify(assert(priv:sign("msg2", md)), "msg2", md) == true, "JWK private " .. i)
            local pem_pub = assert(pkey.new(k:to_PEM("public")))
            assert(pem_pub:verify(sig, "msg", md) == true, "PEM public " .. i)
            local pem_priv = assert(pkey.new(k:tostring("private", "PEM")))
            assert(pem_priv:is_private())
        end
        -- openid-connect's export helper
        local jwk = require("resty.openssl.auxiliary.jwk")
        local ec = keys[2]
        local dumped = assert(jwk.dump_jwk(ec))
        assert(cjson.decode(dumped).crv == "P-256" and cjson.decode(dumped).d == nil)
        assert(jwk.load_jwk(dumped):to_PEM() == ec:to_PEM())
        assert(jwk.dump_jwk({}) == nil)
        local none, err = pkey.new('{"kty":"OKP","crv":"Ed448","x":"AA"}', {format = "JWK"})
        assert(none == nil and err:find("Ed448"), err)
        "#,
    );
}

#[test]
fn aes_cbc_matches_openssl_enc_for_apisix_keyring_and_password_keys() {
    let scratch = Scratch::new("aes");
    let plain = scratch.path("plain");
    std::fs::write(&plain, b"consumer-secret-value").unwrap();
    let key256 = "edd1c9f0985e76a2edd1c9f0985e76a2";
    let key128 = "qeddd145sfvddff3";
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    // APISIX's keyring use: the key is also the IV (its first 16 bytes).
    let enc256 = openssl(&[
        "enc",
        "-aes-256-cbc",
        "-K",
        &hex(key256),
        "-iv",
        &hex(&key256[..16]),
        "-in",
        &plain,
    ]);
    let enc128 = openssl(&[
        "enc",
        "-aes-128-cbc",
        "-K",
        &hex(key128),
        "-iv",
        &hex(key128),
        "-in",
        &plain,
    ]);
    // A password key through EVP_BytesToKey with an 8-byte salt and md5.
    let salted = openssl(&[
        "enc",
        "-aes-128-cbc",
        "-md",
        "md5",
        "-S",
        &hex("WhatSalt"),
        "-pass",
        "pass:secret",
        "-in",
        &plain,
    ]);
    let vm = vm();
    let lua = vm.lua();
    lua.globals()
        .set("ENC256", lua.create_string(&enc256).unwrap())
        .unwrap();
    lua.globals()
        .set("ENC128", lua.create_string(&enc128).unwrap())
        .unwrap();
    // OpenSSL 3's `enc` writes no "Salted__" header when the salt is given with -S.
    assert_eq!(salted.len(), 32);
    lua.globals()
        .set("SALTED", lua.create_string(&salted).unwrap())
        .unwrap();
    run(
        &vm,
        &format!(
            r#"
            local aes = require("resty.aes")
            local plain = "consumer-secret-value"
            local k256, k128 = {key256}, {key128}
            -- exactly APISIX's data_encryption calls
            local c256 = assert(aes:new(k256, nil, aes.cipher(256, "cbc"), {{iv = k256}}))
            local c128 = assert(aes:new(k128, nil, aes.cipher(128, "cbc"), {{iv = k128}}))
            assert(c256:encrypt(plain) == ENC256, "aes-256-cbc matches openssl enc")
            assert(c128:encrypt(plain) == ENC128, "aes-128-cbc matches openssl enc")
            assert(c256:decrypt(ENC256) == plain and c128:decrypt(ENC128) == plain)
            assert(c256:encrypt(plain) == ENC256, "each call starts from the IV again")
            -- the wrong key fails to decrypt (bad padding), as decrypt loops over keyrings expect
            local other = assert(aes:new("0123456789abcdef0123456789abcdef", nil, aes.cipher(256, "cbc"),
                {{iv = "0123456789abcdef0123456789abcdef"}}))
            local none, err = other:decrypt(ENC256)
            -- 1/256 of wrong keys happen to end in valid padding; then the bytes still differ
            assert(none ~= plain, "the wrong key must not recover the plaintext")
            -- salted password key (EVP_BytesToKey, md5 by default)
            local pw = assert(aes:new("secret", "WhatSalt"))
            assert(pw:encrypt(plain) == SALTED, "EVP_BytesToKey path matches openssl enc")
            assert(pw:decrypt(SALTED) == plain)
            local bad, berr = aes:new("secret", "short")
            assert(bad == nil and berr == "salt must be 8 characters or nil", berr)
            local bad2, kerr = aes:new("short", nil, aes.cipher(256, "cbc"), {{iv = "0123456789abcdef"}})
            assert(bad2 == nil and kerr == "bad key length", kerr)
            assert(aes.cipher(100, "cbc") == nil)
            local ok, gcm_err = pcall(aes.new, aes, k256, nil, aes.cipher(256, "gcm"), {{iv = k256}})
            assert(not ok and gcm_err:find('cipher mode "gcm" is not supported by moongate'), gcm_err)
            -- no padding needs whole blocks
            assert(c128:encrypt("0123456789abcdef", true) and not c128:encrypt("short", true))
            "#,
            key256 = lua_str(key256),
            key128 = lua_str(key128),
        ),
    );
}

#[test]
fn rand_bytes_are_fresh_and_sized() {
    let vm = vm();
    run(
        &vm,
        r#"
        local rand = require("resty.openssl.rand")
        local a, b = assert(rand.bytes(32)), assert(rand.bytes(32, true))
        assert(#a == 32 and #b == 32 and a ~= b)
        assert(rand.bytes(0) == "")
        local none, err = rand.bytes("x")
        assert(none == nil and err, err)
        "#,
    );
}

#[test]
fn jwt_load_and_sign_serve_the_jwt_auth_parser_call_shapes() {
    let vm = vm();
    run(
        &vm,
        r#"
        local jwt = require("resty.jwt")
        local mac = require("resty.openssl.mac")
        local pkey = require("resty.openssl.pkey")
        local b64 = require("ngx.base64")

        -- HS256 signed by hand, then loaded the way jwt-auth's parser loads it
        local header = b64.encode_base64url('{"alg":"HS256","typ":"JWT"}')
        local payload = b64.encode_base64url('{"key":"user-key","exp":4102444800}')
        local sig = b64.encode_base64url(mac.new("secret", "HMAC", nil, "sha256"):final(header .. "." .. payload))
        local obj = jwt:load_jwt(header .. "." .. payload .. "." .. sig)
        assert(obj.valid == true and obj.verified == false)
        assert(obj.header.alg == "HS256" and obj.payload.key == "user-key")
        assert(obj.raw_header == header and obj.raw_payload == payload and obj.signature == sig)

        -- the reasons APISIX's suites match on
        local bad = jwt:load_jwt("invalid-" .. header .. "." .. payload .. "." .. sig)
        assert(bad.valid == false and bad.reason == "invalid header: invalid-" .. header, bad.reason)
        assert(jwt:load_jwt("a.b").reason == "invalid jwt string")
        assert(jwt:load_jwt(header .. "." .. payload .. ".").reason == "invalid jwt string")
        assert(jwt:load_jwt(header .. ".bm90IGpzb24." .. sig).reason == "invalid payload: bm90IGpzb24")

        -- sign with each family; the signature verifies with the parser's verify calls
        local ec = assert(pkey.new({type = "EC", curve = "prime256v1"}))
        local rsa = assert(pkey.new({type = "RSA", bits = 2048}))
        local ed = assert(pkey.new({type = "Ed25519"}))
        local cases = {
            {"HS512", "secret", function(d, s) return s == mac.new("secret", "HMAC", nil, "sha512"):final(d) end},
            {"RS256", rsa:to_PEM("private"), function(d, s) return pkey.new(rsa:to_PEM()):verify(s, d, "sha256") end},
            {"PS384", rsa:to_PEM("private"), function(d, s)
                return pkey.new(rsa:to_PEM()):verify(s, d, "sha384", pkey.PADDINGS.RSA_PKCS1_PSS_PADDING) end},
            {"ES256", ec:to_PEM("private"), function(d, s)
                return #s == 64 and pkey.new(ec:to_PEM()):verify(s, d, "sha256", nil, {ecdsa_use_raw = true}) end},
            {"EdDSA", ed:to_PEM("private"), function(d, s) return pkey.new(ed:to_PEM()):verify(s, d) end},
        }
        for _, c in ipairs(cases) do
            local token = jwt:sign(c[2], {header = {alg = c[1], typ = "JWT"}, payload = {key = "k"}})
            local t = jwt:load_jwt(token)
            assert(t.valid and t.header.alg == c[1], c[1])
            local raw_sig = b64.decode_base64url(t.signature)
            assert(c[3](t.raw_header .. "." .. t.raw_payload, raw_sig) == true, c[1] .. " verifies")
            assert(c[3](t.raw_header .. "." .. t.raw_payload .. "x", raw_sig) ~= true, c[1] .. " tamper")
        end
        local ok, err = pcall(jwt.verify, jwt, "k", "t")
        assert(not ok and err:find("verify%(%) is not supported by moongate"), err)
        "#,
    );
}
