//! Fingerprints: a 64-bit XXH3 hash of an item's key and state. Two replicas that hold
//! the same state for a key compute the same fingerprint; any difference in either
//! changes it (a collision, which would hide one difference, has probability 2^-64 per
//! pair of states).

use xxhash_rust::xxh3::Xxh3;

/// Hashes one item's key and the fields of its state, fed in order.
#[derive(Clone)]
pub struct Fingerprinter {
    hasher: Xxh3,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprinter").finish_non_exhaustive()
    }
}

impl Fingerprinter {
    /// Starts the fingerprint of the item `key` (its length is hashed too, so a key's
    /// bytes can never be mistaken for state bytes).
    pub fn new(key: &[u8]) -> Self {
        let mut hasher = Xxh3::new();
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        Self { hasher }
    }

    /// Adds a field of the state.
    pub fn bytes(&mut self, field: &[u8]) -> &mut Self {
        self.hasher.update(&(field.len() as u64).to_le_bytes());
        self.hasher.update(field);
        self
    }

    /// Adds a number of the state.
    pub fn number(&mut self, field: u64) -> &mut Self {
        self.hasher.update(&field.to_le_bytes());
        self
    }

    /// The fingerprint.
    pub fn finish(&self) -> u64 {
        self.hasher.digest()
    }
}

/// The fingerprint of `key` with a state already encoded as bytes.
pub fn fingerprint(key: &[u8], state: &[u8]) -> u64 {
    Fingerprinter::new(key).bytes(state).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_state_boundaries_matter() {
        assert_ne!(fingerprint(b"ab", b"c"), fingerprint(b"a", b"bc"));
        assert_eq!(fingerprint(b"k", b"s"), fingerprint(b"k", b"s"));
        let mut a = Fingerprinter::new(b"k");
        a.number(1).number(2);
        let mut b = Fingerprinter::new(b"k");
        b.number(2).number(1);
        assert_ne!(a.finish(), b.finish());
    }
}
