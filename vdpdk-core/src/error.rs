//! The one error type every driver returns through the ethdev traits.

use std::io;

/// Errors of the ethdev, mempool and flow APIs. Each variant says what the caller did wrong or
/// what the device refused, so a guest application can report it without guessing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed a value out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// The device or driver does not offer this.
    #[error("operation not supported: {0}")]
    Unsupported(String),
    /// Not allowed in the port's current lifecycle state.
    #[error("device is in the wrong state: {0}")]
    BadState(String),
    /// A pool, table or memory allocation is exhausted.
    #[error("out of memory: {0}")]
    NoMem(String),
    /// The device (e.g. host-mux for a guest) said no, by policy or limit.
    #[error("device refused the request: {0}")]
    Refused(String),
    /// The two sides speak incompatible ABI versions.
    #[error("version mismatch: {0}")]
    Version(String),
    /// The device failed or answered nonsense.
    #[error("device I/O failed: {0}")]
    Device(String),
    /// A system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Result of every fallible call in this crate and the drivers.
pub type Result<T> = std::result::Result<T, Error>;
