//! Compiles the gRPC examples' protos (feature `grpc`) with protox, a
//! protobuf compiler written in Rust, so that no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        println!("cargo:rerun-if-changed=proto/greeter.proto");
        let descriptors = protox::compile(["greeter.proto"], ["proto"])?;
        tonic_prost_build::configure().compile_fds(descriptors)?;
    }
    Ok(())
}
