//! Errors for building clocks from untrusted input and for decoding them.

use thiserror::Error;

/// A version or clock built from outside input is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClockError {
    /// An actor id was the empty string.
    #[error("actor id (node_id) must not be empty")]
    EmptyActorId,
    /// An actor id exceeded [`crate::MAX_ACTOR_ID_BYTES`].
    #[error("actor id (node_id) is {len_bytes} bytes long; the limit is {max_bytes} bytes")]
    ActorIdTooLong {
        /// Length of the rejected id.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An entry had counter 0; counters start at 1, an absent entry means 0.
    #[error("version entry for node_id {actor:?} has counter 0; counters start at 1")]
    ZeroCounter {
        /// The actor whose counter was zero.
        actor: String,
    },
    /// The same actor appeared twice in one version.
    #[error("version lists node_id {actor:?} more than once")]
    DuplicateActor {
        /// The repeated actor.
        actor: String,
    },
}

/// Bytes could not be decoded as a clock. Decoding never panics on bad input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The first byte names an encoding this version does not know.
    #[error("unsupported clock encoding version {0}")]
    UnsupportedVersion(u8),
    /// The input ended in the middle of a field.
    #[error("clock encoding is truncated")]
    Truncated,
    /// A variable-length integer was longer than 10 bytes or overflowed 64 bits.
    #[error("malformed varint in clock encoding")]
    BadVarint,
    /// An actor id was not valid UTF-8 or broke the actor id rules.
    #[error("invalid actor id in clock encoding: {0}")]
    BadActor(String),
    /// Entries were not in strictly increasing actor order.
    #[error("clock entries are not sorted by actor or repeat an actor")]
    Unsorted,
    /// A counter was zero.
    #[error("clock entry with counter 0")]
    ZeroCounter,
    /// An entry held more values than its counter allows.
    #[error("clock entry holds {values} values but its counter is only {counter}")]
    TooManyValues {
        /// Values found.
        values: u64,
        /// The entry's counter.
        counter: u64,
    },
    /// A value failed to decode.
    #[error("invalid value in clock encoding: {0}")]
    BadValue(&'static str),
    /// Bytes were left over after a complete clock.
    #[error("{0} trailing bytes after clock encoding")]
    TrailingBytes(usize),
}
