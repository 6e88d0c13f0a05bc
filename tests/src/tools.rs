//! Finding the servers the tests start, as `scripts/test` installs them: an explicit environment
//! variable, then the install cache (`$FERRY_CACHE_DIR`, default `~/.cache/ferry`), then `PATH`.
//! A missing tool is an error naming the script that installs it, never a skipped test.

use std::path::PathBuf;

use anyhow::bail;

/// Finds `name`: `$env_var`, then `<cache>/<cached>`, then `PATH`; `install` is the script to
/// name when it is nowhere.
pub fn find_tool(
    env_var: &str,
    cached: &str,
    name: &str,
    install: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "{env_var}={} is not a file", path.display());
        return Ok(path);
    }
    let cache = std::env::var_os("FERRY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferry")));
    if let Some(cache) = cache {
        let path = cache.join(cached);
        if path.is_file() {
            return Ok(path);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    bail!("{name} not found: run {install} (scripts/test does) or set {env_var}")
}
