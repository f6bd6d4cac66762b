//! Sans-IO wire code: PostgreSQL messages, SCRAM-SHA-256, SFTP packets and login names.
//!
//! Nothing here does I/O, knows tokio or reads a clock: bytes in, messages out.
#![forbid(unsafe_code)]

pub mod login;
pub mod pg;
pub mod scram;
pub mod sftp;
