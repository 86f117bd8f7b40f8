//! The yamux decoder and input path: arbitrary bytes, fed in arbitrary pieces, never panic,
//! and every decodable header re-encodes to the same bytes.
//!
//! `cargo fuzz run mux_frame fuzz/corpus/mux_frame`
#![no_main]

use braid_proto::Time;
use braid_proto::mux::frame::{HEADER_LEN, Header};
use braid_proto::mux::{Config, Connection, Side};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.get(..HEADER_LEN) {
        let raw: [u8; HEADER_LEN] = raw.try_into().unwrap_or([0; HEADER_LEN]);
        if let Ok(h) = Header::decode(&raw) {
            assert_eq!(h.encode(), raw);
        }
    }
    // The first byte picks the side and the piece size.
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let side = if first & 1 == 0 {
        Side::Client
    } else {
        Side::Server
    };
    let piece = usize::from(first >> 1).max(1);
    let mut conn = Connection::new(side, Config::default(), Time::ZERO);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        let failed = conn.handle_input(Time::ZERO, &mut buf).is_err();
        conn.check_invariants();
        while let Some(id) = conn.accept() {
            let mut out = [0u8; 4096];
            let _ = conn.read(Time::ZERO, id, &mut out);
        }
        let mut out = BytesMut::new();
        conn.poll_transmit(Time::ZERO, &mut out, 1 << 20);
        while conn.poll_event().is_some() {}
        if failed {
            break;
        }
    }
});
