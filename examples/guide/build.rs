//! Compiles `proto/orders.proto`, the service of the gRPC chapter, with the
//! protoc binary vendored by the `protoc-bin-vendored` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("orders_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_with_config(config, &["proto/orders.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/orders.proto");
    Ok(())
}
