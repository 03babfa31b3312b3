//! Generated protobuf messages and gRPC services for kvstore, and nothing else.
//!
//! - [`kvstore`]: the public API (`KVStore`, `Membership`), wire-compatible with the
//!   original Go kvstore's JSON shapes.
//! - [`internal`]: node-to-node replica calls.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.

#![allow(missing_docs, clippy::pedantic, missing_debug_implementations)]

/// The public API, package `kvstore`.
pub mod kvstore {
    tonic::include_proto!("kvstore");
}

/// Node-to-node calls, package `kvstore.internal`.
pub mod internal {
    tonic::include_proto!("kvstore.internal");
}

/// Encoded `FileDescriptorSet` of both protos, for reflection services.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kvstore_descriptor");
