//! Command implementations (being wired to the config layer).

use std::net::SocketAddr;
use std::path::Path;

pub fn run(_prefix: &Path, _config: &Path) -> anyhow::Result<()> {
    anyhow::bail!("run: not wired yet")
}

pub fn check(_prefix: &Path, _config: &Path) -> anyhow::Result<()> {
    anyhow::bail!("check: not wired yet")
}

pub fn echo(_listen: SocketAddr, _name: String) -> anyhow::Result<()> {
    anyhow::bail!("echo: not wired yet")
}
