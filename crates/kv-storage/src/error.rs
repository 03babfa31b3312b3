//! Storage errors, each carrying enough context to act on.

use thiserror::Error;

/// A storage operation failed.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A write would leave more sibling values than allowed.
    #[error(
        "key would hold {siblings} sibling values, over the limit of {max}; read the key and write back with its context to resolve them"
    )]
    TooManySiblings {
        /// Siblings the write would leave.
        siblings: usize,
        /// The cap.
        max: usize,
    },
    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt record for key {key}: {reason}")]
    Corrupt {
        /// The key, printed lossily.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The key is longer than the engine can store.
    #[error("key is {len_bytes} bytes; the storage limit is {max_bytes}")]
    KeyTooLong {
        /// Key length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A hint's target is not a node id the store can hold.
    #[error("hint target is {len_bytes} bytes; a node id of 1..=255 bytes is needed")]
    BadHintTarget {
        /// Target length.
        len_bytes: usize,
    },
    /// The underlying engine failed (I/O, a poisoned journal, ...).
    #[error("storage engine error while {action}: {source}")]
    Engine {
        /// What the store was doing.
        action: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
