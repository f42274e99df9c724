//! Compiles `proto/flotilla.proto` into Rust with tonic-build. The .proto is parsed by
//! protox (pure Rust), so no `protoc` needs to be installed. The range metadata messages
//! map onto the types the store already persists (`flotilla_raftstore::metapb`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/flotilla.proto"], ["proto"])?;
    let metapb = "::flotilla_raftstore::metapb";
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".flotilla.v1.Epoch", format!("{metapb}::Epoch"))
        .extern_path(".flotilla.v1.Replica", format!("{metapb}::Replica"))
        .extern_path(".flotilla.v1.ReplicaRole", format!("{metapb}::ReplicaRole"))
        .extern_path(
            ".flotilla.v1.RangeDescriptor",
            format!("{metapb}::RangeDescriptor"),
        )
        .extern_path(".flotilla.v1.WriteOp", format!("{metapb}::WriteOp"))
        .extern_path(".flotilla.v1.MetaEntry", format!("{metapb}::MetaEntry"))
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
