//! placeholder: pg
