//! The application stream header decoders: arbitrary bytes never panic, `Need` always asks for
//! more than it was given, and whatever decodes re-encodes to the bytes it took.
//!
//! `cargo fuzz run --sanitizer none service_header fuzz/seeds/service_header`
#![no_main]

use braid_proto::service::{Decoded, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for end in 0..=data.len() {
        let buf = &data[..end];
        match Request::decode(buf) {
            Ok(Decoded::Done(req, used)) => assert_eq!(req.encode(), &buf[..used]),
            Ok(Decoded::Need(n)) => assert!(n > buf.len()),
            Err(_) => {}
        }
        match Reply::decode(buf) {
            Ok(Decoded::Done(rep, used)) => assert_eq!(rep.encode(), &buf[..used]),
            Ok(Decoded::Need(n)) => assert!(n > buf.len()),
            Err(_) => {}
        }
    }
});
