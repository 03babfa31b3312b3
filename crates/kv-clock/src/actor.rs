//! Actor identifiers: the names of the replicas that mint dots.

use std::fmt;
use std::sync::Arc;

use crate::ClockError;

/// Longest actor id accepted, in bytes. Ids travel in every version, so they stay short.
pub const MAX_ACTOR_ID_BYTES: usize = 128;

/// The id of an actor (a replica node) that creates events.
///
/// Cheap to clone (reference counted). Ordered bytewise, which fixes the order of entries
/// in every clock, so equal clocks have equal encodings.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(Arc<str>);

impl ActorId {
    /// Validates and wraps an actor id: it must be 1..=[`MAX_ACTOR_ID_BYTES`] bytes long.
    pub fn new(id: &str) -> Result<Self, ClockError> {
        if id.is_empty() {
            return Err(ClockError::EmptyActorId);
        }
        if id.len() > MAX_ACTOR_ID_BYTES {
            return Err(ClockError::ActorIdTooLong {
                len_bytes: id.len(),
                max_bytes: MAX_ACTOR_ID_BYTES,
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for ActorId {
    type Error = ClockError;
    fn try_from(id: &str) -> Result<Self, ClockError> {
        Self::new(id)
    }
}
