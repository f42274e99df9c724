//! The engine's error type: every RocksDB failure is turned into a variant a caller can act
//! on, with the operation that failed and RocksDB's own message.

/// Result alias for engine operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in the storage layer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The disk holding the data directory is full; free space and retry.
    #[error("disk full while trying to {op}: {message} (free space on the data directory's disk)")]
    DiskFull { op: &'static str, message: String },
    /// The data on disk could not be read back as written.
    #[error("corruption detected while trying to {op}: {message}")]
    Corruption { op: &'static str, message: String },
    /// Any other I/O or RocksDB failure.
    #[error("storage error while trying to {op}: {message}")]
    Io { op: &'static str, message: String },
}

impl Error {
    pub(crate) fn from_rocks(op: &'static str, e: rocksdb::Error) -> Self {
        let message = e.into_string();
        let lower = message.to_ascii_lowercase();
        if lower.contains("no space left") {
            Error::DiskFull { op, message }
        } else if lower.contains("corruption") {
            Error::Corruption { op, message }
        } else {
            Error::Io { op, message }
        }
    }
}
