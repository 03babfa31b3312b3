//! Client requests as they arrive, and their validation: every field is checked before
//! any work is done, and every rejection says what is wrong and what is allowed.

use bytes::Bytes;
use kv_clock::{ClockError, VersionVector};
use thiserror::Error;

use crate::{Limits, WriteCommand};

/// A client's Put (`value: Some`) or Delete (`value: None`), fields not yet validated.
#[derive(Debug, Clone, Default)]
pub struct ClientWrite {
    /// The key, non-empty and within `max_key_bytes`.
    pub key: String,
    /// The value (non-empty, within `max_value_bytes`), or `None` for a delete.
    pub value: Option<Bytes>,
    /// Requested W; 0 takes the node's default.
    pub consistency_w: u32,
    /// Requested R, which a Put carries for compatibility; 0 or within 1..=N.
    pub consistency_r: u32,
    /// The causal context the client read, as (node id, counter) entries.
    pub version: Vec<(String, u64)>,
    /// Free-form, bounded; for logs.
    pub client_id: String,
    /// Free-form, bounded; for logs.
    pub request_id: String,
    /// Strict or sloppy quorum; `Default` takes the node's setting.
    pub mode: WriteMode,
}

/// Which acknowledgements count toward a write's W.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// The node's setting (`HintConfig::sloppy_quorum`).
    #[default]
    Default,
    /// Only the key's replicas count (Riak's PW): a quorum read sees the write.
    Strict,
    /// A fallback's durable hint for a replica that did not answer counts too.
    Sloppy,
}

impl WriteMode {
    /// Whether a write in this mode is sloppy on a node whose default is `sloppy_default`.
    pub fn is_sloppy(self, sloppy_default: bool) -> bool {
        match self {
            Self::Default => sloppy_default,
            Self::Strict => false,
            Self::Sloppy => true,
        }
    }
}

/// A client's Get, fields not yet validated.
#[derive(Debug, Clone, Default)]
pub struct ClientRead {
    /// The key.
    pub key: String,
    /// Requested R; 0 takes the node's default.
    pub consistency_r: u32,
    /// Free-form, bounded; for logs.
    pub client_id: String,
    /// Free-form, bounded; for logs.
    pub request_id: String,
}

/// A validated read.
#[derive(Debug, Clone)]
pub(crate) struct ReadCommand {
    pub(crate) key: Bytes,
    pub(crate) read_quorum: usize,
    pub(crate) request_id: String,
}

/// A request field that is malformed or over a limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidRequest {
    /// The key is empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key is over the limit.
    #[error("key is {len_bytes} bytes; the limit is {max_bytes} bytes")]
    KeyTooLong {
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A Put carried an empty value.
    #[error("value must not be empty; use Delete to remove a key")]
    EmptyValue,
    /// The value is over the limit.
    #[error("value is {len_bytes} bytes; the limit is {max_bytes} bytes")]
    ValueTooLarge {
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// R or W outside 1..=N.
    #[error("{field}={requested} is outside 1..={replicas} (N, the number of replicas per key)")]
    QuorumOutOfRange {
        /// `consistency_r`, `consistency_w` or `write_quorum`.
        field: &'static str,
        /// The value asked for.
        requested: u32,
        /// N.
        replicas: usize,
    },
    /// The version lists too many entries.
    #[error("version has {entries} entries; at most {max} are allowed")]
    TooManyVersionEntries {
        /// Entries given.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The version is malformed (zero counter, repeated or bad node id).
    #[error("malformed version: {0}")]
    MalformedVersion(#[from] ClockError),
    /// `write_mode` is not one of the API's modes.
    #[error("write_mode {0} is unknown; use 0 (the node's default), 1 (strict) or 2 (sloppy)")]
    UnknownWriteMode(i32),
    /// `client_id` or `request_id` is over the limit.
    #[error("{field} is {len_bytes} bytes; the limit is {max_bytes} bytes")]
    IdTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
}

impl ClientWrite {
    /// Validates every field against `limits` and a ring of `replicas` replicas per key;
    /// the command is sloppy as the request's mode (or `sloppy_default`) says.
    pub(crate) fn validate(
        self,
        limits: &Limits,
        replicas: usize,
        default_w: usize,
        sloppy_default: bool,
    ) -> Result<WriteCommand, InvalidRequest> {
        ids(&self.client_id, &self.request_id, limits)?;
        quorum("consistency_r", self.consistency_r, 1, replicas)?;
        let key = key(self.key, limits)?;
        if let Some(value) = &self.value {
            check_value(value, limits)?;
        }
        let write_quorum = quorum("consistency_w", self.consistency_w, default_w, replicas)?;
        let context = version(&self.version, limits)?;
        Ok(WriteCommand {
            key,
            value: self.value,
            context,
            write_quorum,
            request_id: self.request_id,
            sloppy: self.mode.is_sloppy(sloppy_default),
        })
    }
}

impl ClientRead {
    /// Validates every field against `limits` and a ring of `replicas` replicas per key.
    pub(crate) fn validate(
        self,
        limits: &Limits,
        replicas: usize,
        default_r: usize,
    ) -> Result<ReadCommand, InvalidRequest> {
        ids(&self.client_id, &self.request_id, limits)?;
        let key = key(self.key, limits)?;
        let read_quorum = quorum("consistency_r", self.consistency_r, default_r, replicas)?;
        Ok(ReadCommand {
            key,
            read_quorum,
            request_id: self.request_id,
        })
    }
}

/// A non-empty key within the size limit, as bytes (no copy).
pub(crate) fn key(key: String, limits: &Limits) -> Result<Bytes, InvalidRequest> {
    if key.is_empty() {
        return Err(InvalidRequest::EmptyKey);
    }
    if key.len() > limits.max_key_bytes {
        return Err(InvalidRequest::KeyTooLong {
            len_bytes: key.len(),
            max_bytes: limits.max_key_bytes,
        });
    }
    Ok(Bytes::from(key.into_bytes()))
}

fn check_value(value: &Bytes, limits: &Limits) -> Result<(), InvalidRequest> {
    if value.is_empty() {
        return Err(InvalidRequest::EmptyValue);
    }
    if value.len() > limits.max_value_bytes {
        return Err(InvalidRequest::ValueTooLarge {
            len_bytes: value.len(),
            max_bytes: limits.max_value_bytes,
        });
    }
    Ok(())
}

/// A requested quorum: 0 means the default (capped at N); otherwise it must lie in 1..=N.
pub(crate) fn quorum(
    field: &'static str,
    requested: u32,
    default: usize,
    replicas: usize,
) -> Result<usize, InvalidRequest> {
    if requested == 0 {
        return Ok(default.min(replicas));
    }
    if requested as usize > replicas {
        return Err(InvalidRequest::QuorumOutOfRange {
            field,
            requested,
            replicas,
        });
    }
    Ok(requested as usize)
}

/// W of a write a peer forwarded: no default applies, and it must fit this node's ring.
pub(crate) fn forwarded_quorum(
    write_quorum: usize,
    replicas: usize,
) -> Result<usize, InvalidRequest> {
    if (1..=replicas).contains(&write_quorum) {
        return Ok(write_quorum);
    }
    Err(InvalidRequest::QuorumOutOfRange {
        field: "write_quorum",
        requested: u32::try_from(write_quorum).unwrap_or(u32::MAX),
        replicas,
    })
}

fn version(entries: &[(String, u64)], limits: &Limits) -> Result<VersionVector, InvalidRequest> {
    if entries.len() > limits.max_version_entries {
        return Err(InvalidRequest::TooManyVersionEntries {
            entries: entries.len(),
            max: limits.max_version_entries,
        });
    }
    Ok(VersionVector::from_entries(
        entries
            .iter()
            .map(|(node, counter)| (node.as_str(), *counter)),
    )?)
}

fn ids(client_id: &str, request_id: &str, limits: &Limits) -> Result<(), InvalidRequest> {
    for (field, id) in [("client_id", client_id), ("request_id", request_id)] {
        if id.len() > limits.max_id_bytes {
            return Err(InvalidRequest::IdTooLong {
                field,
                len_bytes: id.len(),
                max_bytes: limits.max_id_bytes,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> ClientWrite {
        ClientWrite {
            key: key.into(),
            value: Some(Bytes::from(value.to_owned())),
            ..ClientWrite::default()
        }
    }

    fn rejection(write: ClientWrite) -> String {
        write
            .validate(&Limits::default(), 3, 2, false)
            .expect_err("the write is invalid")
            .to_string()
    }

    #[test]
    fn every_bad_field_is_named_with_its_limit() {
        assert_eq!(rejection(put("", "v")), "key must not be empty");
        assert!(rejection(put(&"k".repeat(1025), "v")).contains("the limit is 1024 bytes"));
        assert!(rejection(put("k", "")).contains("use Delete"));
        let big = ClientWrite {
            value: Some(Bytes::from(vec![1u8; 1024 * 1024 + 1])),
            ..put("k", "v")
        };
        assert!(rejection(big).contains("value is 1048577 bytes"));
        let w = ClientWrite {
            consistency_w: 4,
            ..put("k", "v")
        };
        assert!(rejection(w).contains("consistency_w=4 is outside 1..=3"));
        let r = ClientWrite {
            consistency_r: 9,
            ..put("k", "v")
        };
        assert!(rejection(r).contains("consistency_r=9"));
        let zero = ClientWrite {
            version: vec![("n1".into(), 0)],
            ..put("k", "v")
        };
        assert!(rejection(zero).contains("counter 0"));
        let repeated = ClientWrite {
            version: vec![("n1".into(), 1), ("n1".into(), 2)],
            ..put("k", "v")
        };
        assert!(rejection(repeated).contains("more than once"));
        let long_id = ClientWrite {
            client_id: "c".repeat(257),
            ..put("k", "v")
        };
        assert!(rejection(long_id).contains("client_id is 257 bytes"));
        let many = ClientWrite {
            version: (0..257).map(|i| (format!("n{i}"), 1)).collect(),
            ..put("k", "v")
        };
        assert!(rejection(many).contains("at most 256"));
    }

    #[test]
    fn a_request_mode_overrides_the_node_default() {
        for (mode, default, sloppy) in [
            (WriteMode::Strict, true, false),
            (WriteMode::Sloppy, false, true),
            (WriteMode::Default, false, false),
            (WriteMode::Default, true, true),
        ] {
            let write = ClientWrite {
                mode,
                ..put("k", "v")
            };
            let command = write.validate(&Limits::default(), 3, 2, default).unwrap();
            assert_eq!(
                command.sloppy, sloppy,
                "{mode:?} on a node defaulting to {default}"
            );
        }
    }

    #[test]
    fn defaults_fill_zero_quorums_and_deletes_need_no_value() {
        let command = put("k", "v")
            .validate(&Limits::default(), 3, 2, false)
            .unwrap();
        assert_eq!(command.write_quorum, 2);
        assert!(
            !command.sloppy,
            "strict unless the node or the request says sloppy"
        );
        let delete = ClientWrite {
            key: "k".into(),
            ..ClientWrite::default()
        };
        let command = delete.validate(&Limits::default(), 1, 2, true).unwrap();
        assert!(
            command.sloppy,
            "the node's default applies to a request that does not choose"
        );
        assert_eq!(command.write_quorum, 1, "the default is capped at N");
        assert!(command.value.is_none());
        let read = ClientRead {
            key: "k".into(),
            ..ClientRead::default()
        };
        assert_eq!(
            read.validate(&Limits::default(), 3, 2).unwrap().read_quorum,
            2
        );
    }
}
