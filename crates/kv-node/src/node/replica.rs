//! The replica side: this node's own copy of the keys it replicates. Peers reach these
//! operations through the internal service; the coordinator calls them directly for its
//! own replica.

use std::sync::Arc;

use bytes::Bytes;
use kv_aae::{Digest, HashRange, TreeFormat};
use kv_storage::{Durable, Siblings, Storage, StorageError, Write};
use tokio::time::Instant;

use super::Node;
use crate::aae::{KeyPage, MAX_DIGEST_RANGES, MAX_KEY_PAGE, key_page};
use crate::{NodeError, WriteCommand};

impl<T> Node<T> {
    /// Whether this node's writes wait for the disk (a sync) before they complete: then
    /// writes that arrive together should be applied side by side, to share a sync.
    pub fn storage_writes_wait(&self) -> bool {
        self.storage.writes_block()
    }

    /// This replica's versions of `key`.
    pub fn replica_read(&self, key: &[u8]) -> Result<Option<Siblings>, NodeError> {
        Ok(self.storage.get(key)?)
    }

    /// Merges versions from another replica. Never size-limited: repair must converge.
    ///
    /// Refused for a key this node replicates in no live version once its ring settled
    /// on a version it is a member of: cleanup dropped such keys, and a late repair or
    /// exchange from a sender still routing with the retired version must not bring a
    /// stale copy back.
    pub async fn replica_write(&self, key: Bytes, versions: Siblings) -> Result<(), NodeError> {
        self.check_replicates(&key)?;
        // Applied on this task (it never waits for the disk); only durability is awaited,
        // with `sync` a group commit that writes arriving meanwhile share.
        let (update, durable) = self.storage.merge_deferred(&key, &versions)?;
        self.aae.index.observe(&key, &update, Instant::now());
        durable.await?;
        Ok(())
    }

    fn check_replicates(&self, key: &[u8]) -> Result<(), NodeError> {
        let Some(routing) = self.routing().filter(|r| r.settled()) else {
            return Ok(());
        };
        let me = self.config.node_id.as_str();
        // Settled: the newest version is the only live one. The common case (a replica)
        // costs one ring lookup; only a refusal scans the members.
        let ring = routing.newest();
        if ring
            .preference_list_for_hash(kv_ring::key_hash(key))
            .contains(me)
            || !ring.members().any(|m| m == me)
        {
            return Ok(());
        }
        Err(NodeError::NotAReplica {
            node: me.to_owned(),
            version: routing.newest_number(),
        })
    }

    /// The digests of `ranges` in this node's anti-entropy index, for `initiator`'s
    /// exchange (refused while this node takes part in another).
    pub fn aae_digests(
        &self,
        format: TreeFormat,
        initiator: &str,
        ranges: &[HashRange],
    ) -> Result<Vec<Digest>, NodeError> {
        check_format(format)?;
        self.answer_exchange(initiator)?;
        if ranges.len() > MAX_DIGEST_RANGES {
            return Err(NodeError::BadExchangeRequest(format!(
                "{} ranges asked at once; at most {MAX_DIGEST_RANGES}",
                ranges.len()
            )));
        }
        Ok(self.aae.index.digests(self.storage.as_ref(), ranges)?)
    }

    /// Ends `initiator`'s exchange: this node is free again; with `completed`, it records
    /// that it agrees with the initiator on `ranges`.
    pub fn aae_end(&self, initiator: &str, completed: bool, ranges: &[HashRange]) {
        self.aae.release_exchange(initiator, completed, ranges);
    }

    /// Up to `limit` keys of `range` (after `after`) with their fingerprints, for
    /// `initiator`'s exchange (refused while this node takes part in another).
    pub fn aae_keys(
        &self,
        format: TreeFormat,
        initiator: &str,
        range: HashRange,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeyPage, NodeError> {
        check_format(format)?;
        self.answer_exchange(initiator)?;
        if !(1..=MAX_KEY_PAGE).contains(&limit) {
            return Err(NodeError::BadExchangeRequest(format!(
                "a key list of {limit} keys asked; the limit is 1..={MAX_KEY_PAGE}"
            )));
        }
        Ok(key_page(self.storage.as_ref(), range, after, limit)?)
    }

    /// Mints the new version of a client write in this node's store (the coordinator's
    /// step before replication): returns everything the key holds afterwards and what is
    /// left before this copy is durable. The version may be sent to the other replicas at
    /// once: a node that loses it (a power loss) takes a new actor id at its next start.
    pub(super) fn mint_locally(
        &self,
        command: &WriteCommand,
    ) -> Result<(Siblings, Durable), NodeError> {
        let minting = self.minting();
        if minting.stopped {
            return Err(NodeError::Stopping {
                node: self.config.node_id.clone(),
            });
        }
        let write = Write {
            context: &command.context,
            value: command.value.clone(),
            actor: &minting.actor,
            max_siblings: self.config.limits.max_siblings,
        };
        let (update, durable) = self.storage.put_deferred(&command.key, &write)?;
        drop(minting);
        self.aae
            .index
            .observe(&command.key, &update, Instant::now());
        Ok((update.after, durable))
    }

    fn answer_exchange(&self, initiator: &str) -> Result<(), NodeError> {
        self.aae
            .answer_exchange(initiator)
            .map_err(|partner| NodeError::ExchangeBusy { partner })
    }

    /// Runs a storage write inline when it is quick (memory, page cache), or on the
    /// blocking pool when it may wait on the disk: a thread hand-off costs more than a
    /// buffered write, but an fsync must not stall the event loop.
    pub(crate) async fn on_storage<R: Send + 'static>(
        &self,
        write: impl FnOnce(&dyn Storage) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, NodeError> {
        if !self.storage.writes_block() {
            return Ok(write(self.storage.as_ref())?);
        }
        let storage = Arc::clone(&self.storage);
        match tokio::task::spawn_blocking(move || write(storage.as_ref())).await {
            Ok(result) => Ok(result?),
            Err(join_error) => Err(NodeError::Storage(StorageError::Engine {
                action: "running a blocking write",
                source: Box::new(join_error),
            })),
        }
    }
}

fn check_format(theirs: TreeFormat) -> Result<(), NodeError> {
    if theirs == TreeFormat::CURRENT {
        return Ok(());
    }
    Err(NodeError::TreeFormat {
        theirs,
        ours: TreeFormat::CURRENT,
    })
}
