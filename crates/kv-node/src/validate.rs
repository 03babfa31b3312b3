//! Validation of client requests: every field is checked before any work is done, and
//! every rejection says what is wrong and what is allowed.

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_proto::kvstore as api;

use crate::{Limits, NodeError};

/// A non-empty key within the size limit, as bytes.
pub(crate) fn key(key: &str, limits: &Limits) -> Result<Bytes, NodeError> {
    if key.is_empty() {
        return Err(NodeError::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(NodeError::InvalidArgument(format!(
            "key is {} bytes; the limit is {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(Bytes::copy_from_slice(key.as_bytes()))
}

/// A non-empty value within the size limit (deletes use Delete, not an empty value).
pub(crate) fn value(value: &Bytes, limits: &Limits) -> Result<(), NodeError> {
    if value.is_empty() {
        return Err(NodeError::InvalidArgument(
            "value must not be empty; use Delete to remove a key".into(),
        ));
    }
    if value.len() > limits.max_value_bytes {
        return Err(NodeError::InvalidArgument(format!(
            "value is {} bytes; the limit is {} bytes",
            value.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// A requested quorum: 0 means the default; otherwise it must lie in 1..=N.
pub(crate) fn quorum(
    field: &str,
    requested: u32,
    default: usize,
    replicas: usize,
) -> Result<usize, NodeError> {
    if requested == 0 {
        return Ok(default.min(replicas));
    }
    let requested = requested as usize;
    if requested > replicas {
        return Err(NodeError::InvalidArgument(format!(
            "{field}={requested} is outside 1..={replicas} (N, the number of replicas per key)"
        )));
    }
    Ok(requested)
}

/// A client-supplied version: valid ids, non-zero counters, no repeats, bounded size.
pub(crate) fn version(
    version: Option<&api::Version>,
    limits: &Limits,
) -> Result<VersionVector, NodeError> {
    let Some(version) = version else {
        return Ok(VersionVector::new());
    };
    if version.entries.len() > limits.max_version_entries {
        return Err(NodeError::InvalidArgument(format!(
            "version has {} entries; at most {} are allowed",
            version.entries.len(),
            limits.max_version_entries
        )));
    }
    VersionVector::from_entries(
        version
            .entries
            .iter()
            .map(|e| (e.node_id.as_str(), e.counter)),
    )
    .map_err(|e| NodeError::InvalidArgument(format!("malformed version: {e}")))
}

/// `client_id` and `request_id` are free-form but bounded.
pub(crate) fn ids(client_id: &str, request_id: &str, limits: &Limits) -> Result<(), NodeError> {
    for (field, id) in [("client_id", client_id), ("request_id", request_id)] {
        if id.len() > limits.max_id_bytes {
            return Err(NodeError::InvalidArgument(format!(
                "{field} is {} bytes; the limit is {} bytes",
                id.len(),
                limits.max_id_bytes
            )));
        }
    }
    Ok(())
}
