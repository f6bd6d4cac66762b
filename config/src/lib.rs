//! Portcullis configuration: the only crate that knows TOML and serde defaults.
//!
//! `load(path)` reads and validates a `portcullis.toml`; `Config::default_embedded()` gives
//! the embedded defaults used when no file exists. Validation reports every problem at once,
//! each with its key path.
#![forbid(unsafe_code)]

mod schema;
mod secret;

pub use schema::*;
pub use secret::Secret;
