//! The replica side: this node's own copy of the keys it replicates. Peers reach these
//! operations through the internal service; the coordinator calls them directly for its
//! own replica.

use std::sync::Arc;

use bytes::Bytes;
use kv_storage::{Siblings, Storage, StorageError, Write};

use super::Node;
use crate::{NodeError, WriteCommand};

impl<T> Node<T> {
    /// Whether a write to this node's storage may block for long (an fsync).
    pub fn storage_writes_block(&self) -> bool {
        self.storage.writes_block()
    }

    /// This replica's versions of `key`.
    pub fn replica_read(&self, key: &[u8]) -> Result<Option<Siblings>, NodeError> {
        Ok(self.storage.get(key)?)
    }

    /// Merges versions from another replica. Never size-limited: repair must converge.
    pub async fn replica_write(&self, key: Bytes, versions: Siblings) -> Result<(), NodeError> {
        self.write_storage(move |storage| storage.merge(&key, &versions))
            .await?;
        Ok(())
    }

    /// Mints the new version of a client write in this node's store (the coordinator's
    /// step before replication) and returns everything the key holds afterwards.
    pub(super) async fn store_locally(
        &self,
        command: &WriteCommand,
    ) -> Result<Siblings, NodeError> {
        let (key, value, context) = (
            command.key.clone(),
            command.value.clone(),
            command.context.clone(),
        );
        let (actor, max_siblings) = (self.actor.clone(), self.config.limits.max_siblings);
        self.write_storage(move |storage| {
            let write = Write {
                context: &context,
                value,
                actor: &actor,
                max_siblings,
            };
            storage.put(&key, &write)
        })
        .await
    }

    /// Runs a storage write inline when it is quick (memory, page cache), or on the
    /// blocking pool when it may wait on the disk: a thread hand-off costs more than a
    /// buffered write, but an fsync must not stall the event loop.
    async fn write_storage<R: Send + 'static>(
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
