//! placeholder: scram
