//! Compiles `proto/boards.proto` (boards' internal gRPC API) with the protoc
//! binary vendored by `protoc-bin-vendored`: no system protoc, no download.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/boards.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/boards.proto");
    Ok(())
}
