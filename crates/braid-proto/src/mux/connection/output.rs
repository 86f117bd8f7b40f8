//! Output: control frames first, then Data frames round-robin.

use super::{Connection, Event};
use crate::Time;
use crate::mux::frame::{Flags, FrameType, Header, StreamId};
use crate::mux::transmit::FrameSink;

impl Connection {
    // ---------------------------------------------------------------- output

    /// Appends frames to `out` until it holds at least `budget` bytes or nothing is left:
    /// session control frames first (pongs, pings, GoAway), then per-stream control frames
    /// (SYN, ACK, window updates, RST), then Data frames of at most `max_frame_size`, one per
    /// stream in turn. Returns the bytes appended.
    pub fn poll_transmit<S: FrameSink>(&mut self, _now: Time, out: &mut S, budget: usize) -> usize {
        let start = out.len();
        if let Some(code) = self.closing.take() {
            out.put_header(&Header::go_away(code).encode());
            return out.len() - start;
        }
        if self.error.is_some() {
            return 0;
        }
        while let Some(h) = self.ctrl.pop_front() {
            if h.ty == FrameType::Ping && h.flags.contains(Flags::ACK) {
                self.queued_pongs -= 1;
            } else if h.ty == FrameType::WindowUpdate && h.flags.contains(Flags::RST) {
                self.queued_refusals -= 1;
            }
            out.put_header(&h.encode());
        }
        while out.len() - start < budget {
            let Some(id) = self.ctrl_streams.pop_front() else {
                break;
            };
            self.stream_ctrl_frame(id, out);
        }
        let frame_size = self.config.frame_size();
        while out.len() - start < budget {
            let Some(id) = self.send_queue.pop_front() else {
                break;
            };
            let limit = self.stream_send_limit();
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.in_send_queue = false;
            if !s.has_sendable() {
                self.maybe_remove(id);
                continue;
            }
            let n = s
                .send_buf
                .len()
                .min(s.send_credit as usize)
                .min(frame_size as usize);
            let mut flags = s.take_open_flags();
            if s.fin_requested && n == s.send_buf.len() {
                flags |= Flags::FIN;
                s.fin_sent = true;
            }
            if n == 0 && flags == Flags::NONE {
                continue;
            }
            out.put_header(&Header::data(id, flags, n as u32).encode());
            s.send_buf.take_into(out, n);
            s.send_credit -= n as u32;
            if s.has_sendable() {
                s.in_send_queue = true;
                self.send_queue.push_back(id);
            }
            let room = (s.send_credit as usize)
                .min(limit)
                .saturating_sub(s.send_buf.len());
            // Wake a blocked writer once half its buffer has drained, not after every frame:
            // one wake-up refills many frames.
            if s.write_waiting && room > 0 && s.send_buf.len() <= limit / 2 {
                s.write_waiting = false;
                self.events.push_back(Event::Writable(id));
            }
            if s.fin_sent {
                self.maybe_remove(id);
            }
        }
        out.len() - start
    }

    pub(super) fn stream_ctrl_frame<S: FrameSink>(&mut self, id: StreamId, out: &mut S) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.in_ctrl_queue = false;
        if s.rst_pending {
            s.rst_pending = false;
            let mut flags = Flags::RST;
            if s.ack_pending {
                s.ack_pending = false;
                flags |= Flags::ACK;
            }
            out.put_header(&Header::window_update(id, flags, 0).encode());
            self.maybe_remove(id);
            return;
        }
        if s.reset.is_some() {
            self.maybe_remove(id);
            return;
        }
        let mut delta = 0;
        if s.grant_pending {
            s.grant_pending = false;
            if !s.fin_received {
                // credit + buffered + consumed + (the rest of a Data frame being received) =
                // window: grant what was consumed. (`window - credit - buffered` also granted
                // the unreceived rest of a frame in progress, beyond the window.)
                delta = s.recv_consumed;
                s.recv_credit += delta;
                s.recv_consumed = 0;
            }
        }
        // SYN/ACK ride on the first Data frame when there is one queued.
        let data_carries = s.has_sendable() && s.in_send_queue;
        let flags = if !data_carries || delta > 0 {
            s.take_open_flags()
        } else {
            Flags::NONE
        };
        if delta > 0 || flags != Flags::NONE {
            out.put_header(&Header::window_update(id, flags, delta).encode());
        }
        self.maybe_remove(id);
    }
}
