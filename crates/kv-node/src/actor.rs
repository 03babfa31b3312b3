//! The actor ids a node mints versions under: `<node id>.<token in base 36>`, recorded in
//! its store's metadata. A new store takes one from its start token; cleanup after a
//! ring change takes another (see `Node::rotate_actor`). The part before the last dot
//! names the node, so a store recorded by another node is recognised.

use kv_clock::{ActorId, ClockError};

/// Longest token: `u64::MAX` in base 36.
const MAX_TOKEN_CHARS: usize = 13;
// Every node id makes a valid actor id whatever the token.
const _: () =
    assert!(crate::MAX_NODE_ID_BYTES + 1 + MAX_TOKEN_CHARS <= kv_clock::MAX_ACTOR_ID_BYTES);

/// The store metadata holding the node's actor id.
pub(crate) const ACTOR_META: &str = "actor";

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
