//! The one error type every driver returns through the ethdev traits.

use std::io;

/// Errors of the ethdev, mempool and flow APIs. Each variant says what the caller did wrong or
/// what the device refused, so a guest application can report it without guessing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    #[error("operation not supported: {0}")]
    Unsupported(String),
    #[error("device is in the wrong state: {0}")]
    BadState(String),
    #[error("out of memory: {0}")]
    NoMem(String),
    #[error("device refused the request: {0}")]
    Refused(String),
    #[error("version mismatch: {0}")]
    Version(String),
    #[error("device I/O failed: {0}")]
    Device(String),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
