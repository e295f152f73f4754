//! Generates the KServe v2 gRPC service (proto/grpc_service.proto) with tonic, using the protoc
//! that the `protoc-bin-vendored` crate ships, so building needs nothing installed by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    // prost-build runs the protoc named by PROTOC: the vendored one, not whatever is on PATH.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // The client (for the tests) without `connect`, which needs tonic's channel feature
        // that only the tests enable.
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        .compile_protos(&["proto/grpc_service.proto"], &["proto"])?;
    Ok(())
}
