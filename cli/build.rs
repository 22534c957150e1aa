//! Compiles the bench's gRPC proto (feature `grpc`) with protox, a protobuf
//! compiler written in Rust, so that no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        println!("cargo:rerun-if-changed=proto/bench.proto");
        let descriptors = protox::compile(["bench.proto"], ["proto"])?;
        tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    }
    Ok(())
}
