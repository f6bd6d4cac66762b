//! placeholder: testbed
