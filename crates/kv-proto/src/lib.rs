//! Generated protobuf messages and gRPC services for kvstore, and nothing else.
//!
//! - [`kvstore`]: the public API (`KVStore`, `Membership`), wire-compatible with the
//!   original Go kvstore's JSON shapes.
//! - [`internal`]: node-to-node replica calls.
//! - [`FILE_DESCRIPTOR_SET`]: the public API's encoded descriptors, for the client
//!   listener's gRPC server reflection (the internal service is deliberately absent).

#![allow(missing_docs, clippy::pedantic, missing_debug_implementations)]

/// The public API, package `kvstore`.
pub mod kvstore {
    tonic::include_proto!("kvstore");
}

/// Node-to-node calls, package `kvstore.internal`.
pub mod internal {
    tonic::include_proto!("kvstore.internal");
}

/// Encoded `FileDescriptorSet` of `kvstore.proto` alone, for reflection on the client
/// listener.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kvstore_descriptor");
