//! Compiles `sockeye/v1/*.proto` with protox (no protoc needed) into
//! messages, clients and servers, and keeps the encoded descriptor set for
//! gRPC server reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: [&str; 3] = [
    "sockeye/v1/common.proto",
    "sockeye/v1/agent.proto",
    "sockeye/v1/collector.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("sockeye_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
