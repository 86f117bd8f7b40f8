//! The aggregation frame decoder never panics and re-encodes what it decodes.
#![no_main]

use braid_proto::agg::frame::{DecodeOutcome, Frame};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(outcome)) = Frame::decode(&mut buf) {
        if let DecodeOutcome::Frame(f) = outcome {
            let mut again = BytesMut::new();
            f.encode(&mut again);
            let back = Frame::decode(&mut again).expect("re-decodes");
            assert_eq!(back, Some(DecodeOutcome::Frame(f)));
        }
    }
});
