//! Portcullis configuration: the only crate that knows TOML and serde defaults.
//!
//! `load(path)` reads and validates a `portcullis.toml`; `Config::embedded_defaults()` gives
//! the embedded defaults used when no file exists; `resolve` picks between them the way the
//! CLI's `-c` option promises. Validation reports every problem at once, each with its key
//! path, and never prints a secret.
#![forbid(unsafe_code)]

mod decode;
mod defaults;
mod fields;
mod problems;
mod raw;
mod roles;
mod schema;
mod secret;
mod targets;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use problems::{ConfigErrors, Problem};
pub use schema::*;
pub use secret::Secret;

/// The config file `resolve` looks for in the working directory when `-c` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "portcullis.toml";

/// Reads and validates the config file at `path`.
///
/// Relative paths inside the file (data_dir, key files, password files, CA and TLS files)
/// resolve against the file's own directory, so the config means the same thing whatever
/// the working directory is.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(
            path.display().to_string(),
            format!("cannot read config file: {e}"),
        )
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    load_str(&text, &base_dir)
}

/// Validates config text; relative paths in it resolve against `base_dir`.
pub fn load_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::load_with_env(text, base_dir, &|name| std::env::var(name).ok())
}

/// Finds the config the CLI should use: the explicit `-c` path, else `./portcullis.toml`
/// when present, else the embedded defaults. Returns the file used, if any.
pub fn resolve(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigErrors> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !path.exists() {
                return Ok((Config::embedded_defaults(), None));
            }
            path
        }
    };
    load(&path).map(|config| (config, Some(path)))
}
