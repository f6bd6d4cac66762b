//! placeholder: webhook notifications (grants work)
