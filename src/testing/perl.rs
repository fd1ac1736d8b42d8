//! Runs a `.t` file's Perl prologue with moongate's own stand-ins for Test::Nginx and
//! t::APISIX (embedded in the binary, written to a scratch directory) and reads back the blocks
//! they print as JSON. Perl really executes the prologue, the preprocessors and the `eval`
//! filters; this module only starts it and reads the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::block::File;

/// The stand-in modules, by their path under the `-I` directory.
const MODULES: [(&str, &str); 5] = [
    (
        "Moongate/TestNginx.pm",
        include_str!("perl/Moongate/TestNginx.pm"),
    ),
    (
        "Test/Nginx/Socket.pm",
        include_str!("perl/Test/Nginx/Socket.pm"),
    ),
    (
        "Test/Nginx/Socket/Lua.pm",
        include_str!("perl/Test/Nginx/Socket/Lua.pm"),
    ),
    (
        "Test/Nginx/Socket/Lua/Stream.pm",
        include_str!("perl/Test/Nginx/Socket/Lua/Stream.pm"),
    ),
    ("t/APISIX.pm", include_str!("perl/t/APISIX.pm")),
];

#[derive(Debug, thiserror::Error)]
pub enum PerlError {
    #[error("cannot run perl (is it installed?): {0}")]
    Spawn(std::io::Error),
    #[error("{file}: the Perl prologue failed:\n{stderr}")]
    Prologue { file: String, stderr: String },
    #[error("{file}: the prologue never called run_tests()")]
    NoRunTests { file: String },
    #[error("{file}: unreadable block list from the stand-ins: {err}")]
    Json { file: String, err: String },
    #[error("cannot write the Perl stand-ins to {0}: {1}")]
    Install(PathBuf, std::io::Error),
}

/// What `$TEST_NGINX_BINARY -V` prints (files probe it for modules). moongate stands in for
/// APISIX-Runtime's nginx: the `resty.apisix.*` API of apisix-nginx-module is moongate's (see
/// docs/lua-api.md), so the module is reported, and files that need it run instead of skipping.
const NGINX_V: &str = "#!/bin/sh
# moongate test's stand-in for `nginx -V`: only answers what the binary was built with.
echo 'nginx version: openresty/1.27.1.2 (moongate)' >&2
echo 'configure arguments: --with-moongate --add-module=../apisix-nginx-module --add-module=../apisix-nginx-module/src/stream --add-module=../apisix-nginx-module/src/meta' >&2
";

/// The stand-in `nginx` (`$TEST_NGINX_BINARY`) under the `-I` directory.
fn nginx_stand_in(inc: &Path) -> std::path::PathBuf {
    inc.join("bin/nginx")
}

/// Writes the stand-in modules under `dir` (the `-I` directory), and the stand-in `nginx`.
pub fn install(dir: &Path) -> Result<(), PerlError> {
    for (rel, text) in MODULES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PerlError::Install(path.clone(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| PerlError::Install(path.clone(), e))?;
    }
    let nginx = nginx_stand_in(dir);
    if let Some(parent) = nginx.parent() {
        std::fs::create_dir_all(parent).map_err(|e| PerlError::Install(nginx.clone(), e))?;
    }
    std::fs::write(&nginx, NGINX_V).map_err(|e| PerlError::Install(nginx.clone(), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&nginx, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| PerlError::Install(nginx.clone(), e))?;
    Ok(())
}

/// Runs `file` with the stand-ins first on `@INC`, in `cwd` (APISIX's files expect its
/// checkout as the working directory), with `env` added to the environment.
pub fn load(
    file: &Path,
    inc: &Path,
    cwd: &Path,
    scratch: &Path,
    env: &[(String, String)],
) -> Result<File, PerlError> {
    let json = scratch.join("blocks.json");
    let _ = std::fs::remove_file(&json);
    let out = Command::new("perl")
        .arg(format!("-I{}", inc.display()))
        .arg(format!("-I{}", cwd.display()))
        .arg(file)
        .current_dir(cwd)
        .env("MOONGATE_TEST_JSON", &json)
        .env("TEST_NGINX_BINARY", nginx_stand_in(inc))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(PerlError::Spawn)?;
    let name = file.display().to_string();
    if !out.status.success() {
        return Err(PerlError::Prologue {
            file: name,
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    let text = match std::fs::read_to_string(&json) {
        Ok(t) => t,
        Err(_) => return Err(PerlError::NoRunTests { file: name }),
    };
    File::from_json(&text).map_err(|e| PerlError::Json {
        file: name,
        err: e.to_string(),
    })
}
