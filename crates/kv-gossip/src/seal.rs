//! Sealed gossip: every datagram encrypted and authenticated with XChaCha20-Poly1305
//! under a keyring (the first key seals, every key opens, as in memberlist), stamped with
//! the sender's wall clock and a nonce used once, so that a forged datagram fails its tag
//! and a recorded one replayed later is dropped. Sans-IO: the caller passes the time.
//!
//! A sealed datagram is `version (1) | key id (4) | nonce (24) | ciphertext | tag (16)`,
//! where the plaintext is `sent_unix_ms (8, big-endian) | payload` and the header is the
//! associated data. Nonces are a 16-byte prefix unique to one start of the sender plus a
//! counter, so they never repeat under a key. A datagram is opened only if its stamp is
//! within [`REPLAY_WINDOW_MS`] of the receiver's clock and its nonce was not seen within
//! that window: node clocks must agree within the window (NTP does).

use std::collections::{HashSet, VecDeque};
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;

/// Bytes in a key (256 bits), written as 64 hex digits in a keyring file.
pub const KEY_BYTES: usize = 32;
/// Most keys a keyring holds (each failed lookup costs nothing: keys are found by id).
pub const MAX_KEYS: usize = 16;
/// How far a datagram's stamp may be from the receiver's clock, either way.
pub const REPLAY_WINDOW_MS: u64 = 30_000;
/// Most nonces remembered for replay detection; beyond it the oldest are forgotten
/// (their datagrams then fall to the stamp check once the window has passed).
pub const MAX_REMEMBERED_NONCES: usize = 65_536;
/// Bytes sealing adds to a datagram.
pub const SEAL_OVERHEAD_BYTES: usize = HEADER_BYTES + STAMP_BYTES + TAG_BYTES;

const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = 1 + 4 + NONCE_BYTES;
const STAMP_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const KEY_ID_LABEL: &[u8] = b"kvstore gossip key id";

/// One key of a keyring.
#[derive(Clone)]
struct GossipKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl GossipKey {
    fn new(bytes: &[u8; KEY_BYTES]) -> Self {
        let cipher = XChaCha20Poly1305::new(bytes.into());
        // The id is a MAC of a fixed label under the key: it names the key without
        // revealing anything about it.
        let tag = cipher
            .encrypt(
                &XNonce::default(),
                Payload {
                    msg: &[],
                    aad: KEY_ID_LABEL,
                },
            )
            .expect("sealing an empty message cannot fail");
        let id = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]);
        Self { id, cipher }
    }
}

/// Why a keyring file was refused; never shows a key.
#[derive(Debug, Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read the gossip keyring {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a key.
    #[error("gossip keyring line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No key at all.
    #[error(
        "the gossip keyring holds no key: add a line of 64 hex digits (e.g. `openssl rand -hex 32`)"
    )]
    Empty,
}

/// The keys a node seals and opens gossip with: the first seals, all open.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<GossipKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl Keyring {
    /// Parses a keyring file's text: one key per line as 64 hex digits, the sealing key
    /// first; `#` starts a comment. (kv-node's `KeyringFile` reads and re-reads the file.)
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<GossipKey> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let error = |why: String| KeyringError::Line {
                line: index + 1,
                why,
            };
            let bytes = parse_hex_key(content).map_err(error)?;
            let key = GossipKey::new(&bytes);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(error("the same key is listed twice".into()));
            }
            if keys.len() == MAX_KEYS {
                return Err(error(format!("more than {MAX_KEYS} keys")));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys })
    }

    /// The keys' ids (not secret), the sealing key's first: for logs and status.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| format!("{:08x}", k.id)).collect()
    }

    fn sealing(&self) -> &GossipKey {
        &self.keys[0]
    }

    fn find(&self, id: u32) -> Option<&GossipKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

fn parse_hex_key(text: &str) -> Result<[u8; KEY_BYTES], String> {
    if text.len() != 2 * KEY_BYTES {
        return Err(format!(
            "a key is {} hex digits, this line has {} characters (make one with `openssl rand -hex 32`)",
            2 * KEY_BYTES,
            text.len()
        ));
    }
    let mut bytes = [0u8; KEY_BYTES];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => bytes[i] = (high * 16 + low) as u8,
            _ => return Err("a key has only hex digits (0-9, a-f)".into()),
        }
    }
    Ok(bytes)
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short, or an unknown format version: not a sealed datagram.
    Malformed,
    /// Sealed with a key this node does not hold.
    UnknownKey,
    /// The tag does not match: forged or damaged.
    Forged,
    /// Its stamp is outside the replay window of this node's clock.
    Stale,
    /// Its nonce was seen already: a replay.
    Replayed,
}

impl OpenError {
    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
        }
    }
}

/// Seals outgoing datagrams and opens incoming ones for one node.
pub struct Sealer {
    keyring: Keyring,
    nonce_prefix: [u8; 16],
    counter: u64,
    seen: HashSet<[u8; NONCE_BYTES]>,
    /// Remembered nonces in arrival order, with the time each may be forgotten.
    expiry: VecDeque<(u64, [u8; NONCE_BYTES])>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The nonce prefix and the remembered nonces are not secret, only long.
        f.debug_struct("Sealer")
            .field("keyring", &self.keyring)
            .field("sealed", &self.counter)
            .field("remembered", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `keyring`. `nonce_prefix` must differ from one start of a node to the
    /// next and between nodes (e.g. a hash of the node id, its start time and its pid):
    /// with the counter it makes every nonce unique.
    pub fn new(keyring: Keyring, nonce_prefix: [u8; 16]) -> Self {
        Self {
            keyring,
            nonce_prefix,
            counter: 0,
            seen: HashSet::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Swaps the keyring (a rotation step); remembered nonces stay.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// The current keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// `payload` sealed with the first key, stamped `now_unix_ms`.
    pub fn seal(&mut self, payload: &[u8], now_unix_ms: u64) -> Vec<u8> {
        self.counter += 1;
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&self.counter.to_be_bytes());
        let key = self.keyring.sealing();
        let mut datagram = Vec::with_capacity(payload.len() + SEAL_OVERHEAD_BYTES);
        datagram.push(VERSION);
        datagram.extend_from_slice(&key.id.to_be_bytes());
        datagram.extend_from_slice(&nonce);
        let mut plaintext = Vec::with_capacity(STAMP_BYTES + payload.len());
        plaintext.extend_from_slice(&now_unix_ms.to_be_bytes());
        plaintext.extend_from_slice(payload);
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &datagram,
                },
            )
            .expect("sealing in memory cannot fail");
        datagram.extend_from_slice(&sealed);
        debug_assert_eq!(datagram.len(), payload.len() + SEAL_OVERHEAD_BYTES);
        datagram
    }

    /// The payload of a sealed `datagram` received at `now_unix_ms`, or why it is dropped.
    pub fn open(&mut self, datagram: &[u8], now_unix_ms: u64) -> Result<Vec<u8>, OpenError> {
        if datagram.len() < SEAL_OVERHEAD_BYTES || datagram[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let (header, sealed) = datagram.split_at(HEADER_BYTES);
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let key = self.keyring.find(id).ok_or(OpenError::UnknownKey)?;
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&header[5..]);
        let plaintext = key
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| OpenError::Forged)?;
        let (stamp, payload) = plaintext.split_at(STAMP_BYTES);
        let sent_unix_ms = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
        if sent_unix_ms.abs_diff(now_unix_ms) > REPLAY_WINDOW_MS {
            return Err(OpenError::Stale);
        }
        self.forget_expired(now_unix_ms);
        if !self.seen.insert(nonce) {
            return Err(OpenError::Replayed);
        }
        // Until its stamp leaves the window (in either direction), a replay of this
        // datagram must meet its nonce here.
        let forget_at = sent_unix_ms.max(now_unix_ms) + REPLAY_WINDOW_MS;
        self.expiry.push_back((forget_at, nonce));
        if self.expiry.len() > MAX_REMEMBERED_NONCES
            && let Some((_, oldest)) = self.expiry.pop_front()
        {
            self.seen.remove(&oldest);
        }
        debug_assert_eq!(self.seen.len(), self.expiry.len());
        Ok(payload.to_vec())
    }

    fn forget_expired(&mut self, now_unix_ms: u64) {
        while let Some(&(forget_at, nonce)) = self.expiry.front() {
            if forget_at > now_unix_ms {
                break;
            }
            self.expiry.pop_front();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NEW: &str = "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000";
    const NOW: u64 = 1_800_000_000_000;

    fn sealer(keys: &[&str], prefix: u8) -> Sealer {
        Sealer::new(Keyring::parse(&keys.join("\n")).unwrap(), [prefix; 16])
    }

    #[test]
    fn sealed_datagrams_open_and_hide_their_payload() {
        let mut a = sealer(&[OLD], 1);
        let mut b = sealer(&[OLD], 2);
        let datagram = a.seal(b"probe from n1", NOW);
        assert!(!datagram.windows(5).any(|w| w == b"probe"));
        assert_eq!(b.open(&datagram, NOW + 5).unwrap(), b"probe from n1");
    }

    #[test]
    fn forged_damaged_and_foreign_datagrams_are_dropped() {
        let mut a = sealer(&[OLD], 1);
        let mut b = sealer(&[OLD], 2);
        let mut stranger = sealer(&[NEW], 3);
        let datagram = a.seal(b"hello", NOW);
        for at in [0, 7, HEADER_BYTES + 2, datagram.len() - 1] {
            let mut damaged = datagram.clone();
            damaged[at] ^= 0x40;
            assert!(b.open(&damaged, NOW).is_err(), "byte {at} flipped");
        }
        let mut forged = datagram.clone();
        forged[HEADER_BYTES] ^= 1;
        assert_eq!(b.open(&forged, NOW), Err(OpenError::Forged));
        assert_eq!(
            b.open(&stranger.seal(b"x", NOW), NOW),
            Err(OpenError::UnknownKey)
        );
        assert_eq!(b.open(b"plain foca bytes", NOW), Err(OpenError::Malformed));
        assert_eq!(b.open(&[], NOW), Err(OpenError::Malformed));
    }

    #[test]
    fn replays_and_stale_datagrams_are_dropped() {
        let mut a = sealer(&[OLD], 1);
        let mut b = sealer(&[OLD], 2);
        let datagram = a.seal(b"hello", NOW);
        assert!(b.open(&datagram, NOW).is_ok());
        assert_eq!(b.open(&datagram, NOW + 10), Err(OpenError::Replayed));
        assert_eq!(
            b.open(&datagram, NOW + REPLAY_WINDOW_MS + 1),
            Err(OpenError::Stale)
        );
        let early = a.seal(b"from a fast clock", NOW + REPLAY_WINDOW_MS + 1);
        assert_eq!(b.open(&early, NOW), Err(OpenError::Stale));
        // Nonces are forgotten once their stamps left the window, not before.
        for i in 0..100 {
            let d = a.seal(b"x", NOW + i);
            assert!(b.open(&d, NOW + i).is_ok());
        }
        let late = a.seal(b"y", NOW + 3 * REPLAY_WINDOW_MS);
        assert!(b.open(&late, NOW + 3 * REPLAY_WINDOW_MS).is_ok());
        assert_eq!(b.seen.len(), 1, "expired nonces are forgotten");
    }

    #[test]
    fn rotation_adds_switches_then_removes_without_a_gap() {
        let mut a = sealer(&[OLD], 1);
        let mut b = sealer(&[OLD], 2);
        // 1. Every node adds the new key (still sealing with the old one).
        b.set_keyring(Keyring::parse(&format!("{OLD}\n{NEW}")).unwrap());
        assert!(b.open(&a.seal(b"1", NOW), NOW).is_ok());
        // 2. One node switches first: the others open with the key they added.
        a.set_keyring(Keyring::parse(&format!("{NEW}\n{OLD}")).unwrap());
        assert!(b.open(&a.seal(b"2", NOW), NOW).is_ok());
        assert!(a.open(&b.seal(b"3", NOW), NOW).is_ok());
        // 3. The old key goes once every node seals with the new one.
        b.set_keyring(Keyring::parse(NEW).unwrap());
        a.set_keyring(Keyring::parse(NEW).unwrap());
        assert!(b.open(&a.seal(b"4", NOW), NOW).is_ok());
        let mut old_only = sealer(&[OLD], 9);
        assert_eq!(
            b.open(&old_only.seal(b"5", NOW), NOW),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn bad_keyrings_name_the_line_and_never_the_key() {
        let cases = [
            ("abcd", "line 1: a key is 64 hex digits"),
            (&"zz".repeat(32), "only hex digits"),
            (&format!("# comment\n{OLD}\n{OLD}"), "line 3: the same key"),
            ("# nothing", "holds no key"),
        ];
        for (text, expected) in cases {
            let message = Keyring::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(!message.contains(OLD), "{message}");
        }
        let ring = Keyring::parse(&format!("{NEW} # current\n{OLD}")).unwrap();
        assert_eq!(ring.key_ids().len(), 2);
        assert!(!format!("{ring:?}").contains(NEW));
    }
}
