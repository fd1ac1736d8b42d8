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

/// Writes the stand-in modules under `dir` (the `-I` directory).
pub fn install(dir: &Path) -> Result<(), PerlError> {
    for (rel, text) in MODULES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PerlError::Install(path.clone(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| PerlError::Install(path.clone(), e))?;
    }
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
