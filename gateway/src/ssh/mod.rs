//! placeholder: ssh
