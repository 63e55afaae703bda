//! Compiles `proto/items.proto` with the protoc binary the
//! `protoc-bin-vendored` crate ships: no system protoc, no download.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // For reflection (`grpc.reflection`): `grpcurl` lists and calls the
    // service without the .proto file.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("items.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_with_config(config, &["proto/items.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/items.proto");
    Ok(())
}
