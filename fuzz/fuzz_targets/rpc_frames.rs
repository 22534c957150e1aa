//! Fuzz target `rpc_frames`: the RPC frame decoder and the handshake
//! message decoders on arbitrary bytes.
//!
//! Every header either decodes to fields that encode back to the same 16
//! bytes, or is refused with an error; chunks joined by a `Joiner` never
//! make a frame longer than the maximum; hello, welcome: the same
//! round-trip property. Nothing may panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmring_rpc::frame::{FLAG_MORE, HEADER_LEN, Header, Joiner};
use shmring_rpc::handshake::{Hello, Welcome};

#[derive(Arbitrary, Debug)]
struct Input {
    max: u16,
    chunks: Vec<Vec<u8>>,
    hello: [u8; 32],
    welcome: [u8; 32],
}

fuzz_target!(|input: Input| {
    let max = u64::from(input.max);
    let mut joiner = Joiner::new(max);
    for raw in &input.chunks {
        let Ok(h) = Header::decode(raw, max) else { continue };
        assert_eq!(h.encode()[..], raw[..HEADER_LEN], "a decoded header encodes back to its bytes");
        assert!(u64::from(h.len) <= max);
        let Some(payload) = raw[HEADER_LEN..].get(..h.len as usize) else { continue };
        match joiner.push(h, payload) {
            Ok(Some(frame)) => {
                assert!(frame.payload.len() as u64 <= max, "a joined frame over the maximum");
                assert_eq!(frame.flags & FLAG_MORE, 0);
                assert_eq!(frame.id, h.id);
            }
            Ok(None) => assert_ne!(h.flags & FLAG_MORE, 0),
            Err(_) => joiner = Joiner::new(max), // a real connection ends here
        }
    }
    if let Ok(h) = Hello::decode(&input.hello) {
        assert_eq!(h.encode(), input.hello);
    }
    if let Ok(w) = Welcome::decode(&input.welcome) {
        assert_eq!(w.encode(), input.welcome);
    }
});
