//! placeholder: login
