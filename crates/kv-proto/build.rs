//! Generates the gRPC code from `proto/` with protox (pure Rust): no system protoc.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let files = [
        proto_dir.join("kvstore.proto"),
        proto_dir.join("internal.proto"),
    ];
    let descriptors = protox::compile(&files, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // prost does not write the descriptor set itself; reflection needs it. Only the public
    // API's: the client listener must not list the node-to-node service.
    let public = protox::compile([&files[0]], [&proto_dir])?;
    std::fs::write(
        out_dir.join("kvstore_descriptor.bin"),
        public.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
