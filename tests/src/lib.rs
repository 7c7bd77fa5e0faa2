//! Cross-crate integration tests (tests/tests/*.rs) and the guest and mux processes they drive
//! (src/bin): nothing here is a library for other crates.

#![warn(missing_docs)]
