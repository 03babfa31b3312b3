//! The actor ids a node mints versions under: `<node id>.<token in base 36>`, recorded in
//! its store's metadata. A new store takes one from its start token; cleanup after a
//! ring change takes another (see `Node::rotate_actor`), and so does a start after a stop
//! that was not clean (a crash, a power loss): a coordinator sends a version to the other
//! replicas before its own copy is durable, so a version lost with the power may live on
//! elsewhere, and minting under the old actor again could give another value its dot.
//! The part before the last dot names the node, so a store recorded by another node is
//! recognised.

use kv_clock::{ActorId, ClockError};
use kv_storage::{Storage, StorageError};

/// Longest token: `u64::MAX` in base 36.
const MAX_TOKEN_CHARS: usize = 13;
// Every node id makes a valid actor id whatever the token.
const _: () =
    assert!(crate::MAX_NODE_ID_BYTES + 1 + MAX_TOKEN_CHARS <= kv_clock::MAX_ACTOR_ID_BYTES);

/// The store metadata holding the node's actor id.
pub(crate) const ACTOR_META: &str = "actor";

/// The store metadata saying whether the node that last used the store stopped cleanly:
/// [`CLEAN_STOP`] after a clean stop, [`RUNNING`] while a node runs on it.
pub(crate) const CLEAN_STOP_META: &str = "clean-stop";
const CLEAN_STOP: &[u8] = b"clean";
const RUNNING: &[u8] = b"running";

/// Records that the node stopped minting cleanly (synced with every write before it).
pub(crate) fn record_clean_stop(storage: &dyn Storage) -> Result<(), StorageError> {
    storage.set_meta(CLEAN_STOP_META, CLEAN_STOP)
}

/// Whether the store's last node stopped cleanly, and records that a node now runs on it
/// (so a crash from here on is seen by the next start).
pub(crate) fn take_clean_stop(storage: &dyn Storage) -> Result<bool, StorageError> {
    let clean = storage.meta(CLEAN_STOP_META)?.as_deref() == Some(CLEAN_STOP);
    storage.set_meta(CLEAN_STOP_META, RUNNING)?;
    Ok(clean)
}

/// The actor after `current`: a token hashed from it and `salt`, so it differs from every
/// earlier one whatever the salt's origin.
pub(crate) fn next_actor(node_id: &str, current: &ActorId, salt: u64) -> ActorId {
    let seed = format!("{}/{salt}", current.as_str());
    let next = actor_id(node_id, kv_ring::key_hash(seed.as_bytes()))
        .expect("a valid node id with any token is a valid actor id (asserted above)");
    debug_assert_ne!(&next, current, "a new actor must differ from the old one");
    next
}

/// The actor id `<node_id>.<token in base 36>`.
pub(crate) fn actor_id(node_id: &str, token: u64) -> Result<ActorId, ClockError> {
    ActorId::new(&format!("{node_id}.{}", base36(token)))
}

/// `value` in base 36 (digits, then lowercase letters): a token in a few characters.
fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut text = Vec::new();
    loop {
        text.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    text.reverse();
    String::from_utf8(text).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_short_base_36() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
        assert_eq!(base36(u64::MAX).len(), MAX_TOKEN_CHARS);
        assert_eq!(actor_id("n1", 36).unwrap().as_str(), "n1.10");
    }
}
