//! Gossip on the wire: plain, or sealed under a keyring file (`--gossip-keyring`) that is
//! re-read while the node runs, so keys rotate without a restart: add the new key on
//! every node, move it first on every node, then remove the old one.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kv_gossip::{Keyring, KeyringError, OpenError, Sealer};

/// A keyring and the file it was read from (and is re-read from).
#[derive(Debug, Clone)]
pub struct KeyringFile {
    path: PathBuf,
    text: String,
    keyring: Keyring,
}

impl KeyringFile {
    /// Reads and checks the keyring file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let keyring = Keyring::parse(&text)?;
        Ok(Self {
            path: path.to_owned(),
            text,
            keyring,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys' ids (not secret), the sealing key's first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keyring.key_ids()
    }
}

/// Seals and opens datagrams when a keyring is set; passes them through otherwise.
#[derive(Debug)]
pub(crate) struct Envelope {
    sealed: Option<Sealed>,
}

#[derive(Debug)]
struct Sealed {
    sealer: Sealer,
    file: KeyringFile,
}

impl Envelope {
    /// An envelope for this start of node `node_id` (`bump` differs between starts).
    pub(crate) fn new(file: Option<&KeyringFile>, node_id: &str, bump: u64) -> Self {
        let sealed = file.map(|file| Sealed {
            sealer: Sealer::new(file.keyring.clone(), nonce_prefix(node_id, bump)),
            file: file.clone(),
        });
        Self { sealed }
    }

    /// `payload` as it goes on the wire.
    pub(crate) fn wrap<'a>(&mut self, payload: &'a [u8]) -> Cow<'a, [u8]> {
        match &mut self.sealed {
            Some(sealed) => Cow::Owned(sealed.sealer.seal(payload, unix_ms())),
            None => Cow::Borrowed(payload),
        }
    }

    /// The payload of a received `datagram`, or why it is dropped.
    pub(crate) fn unwrap<'a>(&mut self, datagram: &'a [u8]) -> Result<Cow<'a, [u8]>, OpenError> {
        match &mut self.sealed {
            Some(sealed) => sealed.sealer.open(datagram, unix_ms()).map(Cow::Owned),
            None => Ok(Cow::Borrowed(datagram)),
        }
    }

    /// Re-reads the keyring file and installs it if it changed. A file that cannot be
    /// read or parsed leaves the current keyring in place (and says why, once per
    /// change), so a half-written file never cuts the node off.
    pub(crate) fn reload(&mut self) {
        let Some(sealed) = &mut self.sealed else {
            return;
        };
        let path = sealed.file.path.clone();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        if text == sealed.file.text {
            return;
        }
        sealed.file.text.clone_from(&text);
        match Keyring::parse(&text) {
            Ok(keyring) => {
                tracing::info!(
                    file = %path.display(),
                    keys = ?keyring.key_ids(),
                    "gossip keyring reloaded; the first key seals"
                );
                sealed.sealer.set_keyring(keyring.clone());
                sealed.file.keyring = keyring;
            }
            Err(error) => {
                tracing::warn!(%error, "gossip keyring not reloaded; keeping the current keys");
            }
        }
    }
}

/// A nonce prefix unique to this start of this node: its id, its bump, the process and
/// the time. Uniqueness is what the cipher needs, not secrecy.
fn nonce_prefix(node_id: &str, bump: u64) -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{node_id}/{bump}/{}/{nanos}", std::process::id());
    let high = kv_ring::key_hash(seed.as_bytes());
    let low = kv_ring::key_hash(format!("{seed}/low").as_bytes());
    let mut prefix = [0u8; 16];
    prefix[..8].copy_from_slice(&high.to_be_bytes());
    prefix[8..].copy_from_slice(&low.to_be_bytes());
    prefix
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
