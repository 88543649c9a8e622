fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Payloads stay `bytes::Bytes` so they are sliced, not copied, out of
        // the receive buffer.
        .bytes(".")
        .compile_protos(
            &["proto/bookie.proto", "proto/replication.proto"],
            &["proto"],
        )?;
    Ok(())
}
