//! Any bytes through the frame decoder and the stored-entry parsers that
//! dispatch runs on every entry: they may refuse, never panic or hang.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use magnetar_broker::protocol::{commands, entry_metadata, Decoded, PulsarCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = PulsarCodec::new(64 * 1024);
    let mut buffer = BytesMut::from(data);
    loop {
        match codec.decode(&mut buffer) {
            Ok(Some(Decoded::Frame(frame))) => {
                if let Some(payload) = frame.payload {
                    let _ = entry_metadata(&payload.entry);
                    let _ = commands::entry_info(&payload.entry, true);
                }
            }
            Ok(Some(Decoded::Corrupt(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let _ = entry_metadata(data);
    let _ = commands::entry_info(data, true);
});
