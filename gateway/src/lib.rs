//! The Portcullis runtime: listeners, grants, sessions, the PostgreSQL and SSH proxies, the
//! admin API and the command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod context;
mod cores;
pub mod demo;
pub mod grants;
pub mod keys;
pub mod notify;
mod password;
pub mod pg;
pub mod reload;
pub mod serve;
pub mod ssh;
pub mod testbed;
pub mod unended;
