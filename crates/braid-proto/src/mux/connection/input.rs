//! Input: decoding frames and applying them to the streams.

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, Event, MAX_QUEUED_PONGS, MAX_QUEUED_REFUSALS, PartialData, Side};
use crate::Time;
use crate::mux::config::INITIAL_WINDOW;
use crate::mux::error::{ConnectionError, ProtocolError};
use crate::mux::frame::{Flags, FrameType, GoAwayCode, HEADER_LEN, Header, StreamId};
use crate::mux::peer_ids::IdUse;
use crate::mux::stream::{ResetBy, Stream};

impl Connection {
    // ---------------------------------------------------------------- input

    /// Consumes every complete frame (and any available part of a Data payload) from `input`.
    ///
    /// # Errors
    /// A protocol violation: the session is then closed with GoAway(protocol error), which the
    /// next [`poll_transmit`](Self::poll_transmit) emits. Input after close is discarded.
    pub fn handle_input(&mut self, now: Time, input: &mut BytesMut) -> Result<(), ConnectionError> {
        if let Some(e) = &self.error {
            input.clear();
            return Err(e.clone());
        }
        loop {
            if let Some(p) = self.partial {
                if input.is_empty() && p.remaining > 0 {
                    return Ok(());
                }
                let take = (p.remaining as usize).min(input.len());
                if take > 0 {
                    if p.deliver {
                        let chunk = input.split_to(take).freeze();
                        self.deliver(p.stream, chunk);
                    } else {
                        input.advance(take);
                    }
                }
                let remaining = p.remaining - take as u32;
                if remaining > 0 {
                    self.partial = Some(PartialData { remaining, ..p });
                    return Ok(());
                }
                self.partial = None;
                self.end_of_frame(now, p.stream, p.flags);
                continue;
            }
            if input.len() < HEADER_LEN {
                return Ok(());
            }
            let mut raw = [0u8; HEADER_LEN];
            raw.copy_from_slice(&input[..HEADER_LEN]);
            let header = match Header::decode(&raw) {
                Ok(h) => h,
                Err(e) => return Err(self.protocol_error(e.into(), input)),
            };
            input.advance(HEADER_LEN);
            if let Err(e) = self.handle_header(now, header) {
                return Err(self.protocol_error(e, input));
            }
        }
    }

    pub(super) fn protocol_error(
        &mut self,
        e: ProtocolError,
        input: &mut BytesMut,
    ) -> ConnectionError {
        input.clear();
        let err = ConnectionError::PeerMisbehaved(e);
        self.fail(err.clone(), Some(GoAwayCode::ProtocolError));
        err
    }

    pub(super) fn handle_header(&mut self, now: Time, h: Header) -> Result<(), ProtocolError> {
        match h.ty {
            FrameType::Ping => {
                if h.flags.contains(Flags::ACK) {
                    if let Some(pos) = self.pings.iter().position(|&(id, _)| id == h.length) {
                        let (_, sent) = self.pings.remove(pos).unwrap_or((0, now));
                        let rtt = now.saturating_since(sent);
                        self.rtt = Some(rtt);
                        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
                        self.events.push_back(Event::Pong { id: h.length, rtt });
                    }
                } else if h.flags.contains(Flags::SYN) && self.queued_pongs < MAX_QUEUED_PONGS {
                    self.queued_pongs += 1;
                    self.ctrl.push_front(Header::ping(Flags::ACK, h.length));
                }
                Ok(())
            }
            FrameType::GoAway => {
                if !self.remote_go_away {
                    self.remote_go_away = true;
                    self.events
                        .push_back(Event::PeerGoAway(GoAwayCode::from_u32(h.length)));
                    if self.open_waiting {
                        self.open_waiting = false;
                        self.events.push_back(Event::CanOpen);
                    }
                }
                Ok(())
            }
            FrameType::Data | FrameType::WindowUpdate => self.handle_stream_frame(now, h),
        }
    }

    pub(super) fn handle_stream_frame(
        &mut self,
        now: Time,
        h: Header,
    ) -> Result<(), ProtocolError> {
        let id = h.stream_id;
        let is_data = h.ty == FrameType::Data;
        if id == 0 {
            if is_data {
                return Err(ProtocolError::DataOnSessionStream);
            }
            // A session-level window update carries nothing in yamux: ignore it.
            return Ok(());
        }
        let mut deliver = false;
        if h.flags.contains(Flags::SYN) {
            deliver = self.handle_syn(id)?;
        } else if let Some(s) = self.streams.get_mut(&id) {
            deliver = s.reset.is_none() && !s.fin_received;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            if s.outbound && !s.acked && (h.flags.contains(Flags::ACK) || s.reset.is_none()) {
                // ACK, or any frame on the stream, means the peer has it.
                s.acked = true;
                self.pending_open -= 1;
                if self.open_waiting {
                    self.open_waiting = false;
                    self.events.push_back(Event::CanOpen);
                }
            }
        }
        if is_data {
            if let Some(s) = self.streams.get_mut(&id) {
                if h.length > 0 && s.reset.is_none() {
                    if h.length > s.recv_credit {
                        return Err(ProtocolError::FlowControl {
                            stream: id,
                            len: h.length,
                            credit: s.recv_credit,
                        });
                    }
                    s.recv_credit -= h.length;
                }
                if s.released {
                    // Discarded, but granted back so the peer can finish.
                    deliver = false;
                    s.recv_consumed += h.length;
                    if h.length > 0 && !s.grant_pending && !h.flags.contains(Flags::FIN) {
                        s.grant_pending = true;
                        self.queue_ctrl(id);
                    }
                }
            }
            self.partial = Some(PartialData {
                stream: id,
                remaining: h.length,
                deliver,
                flags: h.flags,
            });
            return Ok(());
        }
        // Window update.
        if let Some(s) = self.streams.get_mut(&id) {
            if s.reset.is_none() && h.length > 0 {
                s.send_credit = s.send_credit.saturating_add(h.length);
                if s.write_waiting {
                    s.write_waiting = false;
                    self.events.push_back(Event::Writable(id));
                }
            }
        }
        self.end_of_frame(now, id, h.flags);
        Ok(())
    }

    /// A SYN for `id`. Returns whether the frame's data is to be delivered.
    pub(super) fn handle_syn(&mut self, id: StreamId) -> Result<bool, ProtocolError> {
        let peer_parity = match self.side {
            Side::Client => 0,
            Side::Server => 1,
        };
        if id % 2 != peer_parity {
            return Err(ProtocolError::InvalidStreamId(id));
        }
        if self.streams.contains_key(&id) {
            return Err(ProtocolError::DuplicateStream(id));
        }
        let too_old = match self.peer_ids.record(id) {
            IdUse::Fresh => false,
            // Its stream ended (and was forgotten) or was refused: taking the SYN as a new
            // stream would hand the application a stream it already saw end.
            IdUse::Reused => return Err(ProtocolError::ReusedStreamId(id)),
            // Fresh or reused, no one can tell: refused, never taken as a new stream.
            IdUse::TooOld => true,
        };
        if too_old
            || self.local_go_away
            || self.streams.len() >= self.config.max_streams
            || !self.has_room_for_stream()
            || self.accept_queue.len() >= self.config.max_pending_accept
        {
            // Refused: the stream never exists here, the session goes on. One RST per id
            // (only an id too old to track can be refused twice).
            let rst = Header::window_update(id, Flags::RST, 0);
            if !self.ctrl.contains(&rst) {
                if self.queued_refusals >= MAX_QUEUED_REFUSALS {
                    return Err(ProtocolError::RefusalFlood);
                }
                self.queued_refusals += 1;
                self.ctrl.push_back(rst);
            }
            return Ok(false);
        }
        self.streams.insert(id, Stream::new(false, Time::ZERO));
        self.session_window += u64::from(INITIAL_WINDOW);
        self.accept_queue.push_back(id);
        if self.accept_waiting {
            self.accept_waiting = false;
        }
        self.events.push_back(Event::Incoming);
        Ok(true)
    }

    pub(super) fn deliver(&mut self, id: StreamId, chunk: Bytes) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset.is_some() || s.released {
            return;
        }
        s.recv_buffered += chunk.len() as u32;
        s.recv_buf.push_back(chunk);
        if s.read_waiting {
            s.read_waiting = false;
            self.events.push_back(Event::Readable(id));
        }
    }

    /// FIN and RST take effect after the frame's payload.
    pub(super) fn end_of_frame(&mut self, _now: Time, id: StreamId, flags: Flags) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset.is_some() {
            return;
        }
        if flags.contains(Flags::RST) {
            s.reset = Some(ResetBy::Remote);
            s.send_buf.clear();
            s.rst_pending = false;
            if s.outbound && !s.acked {
                s.acked = true;
                self.pending_open -= 1;
            }
            self.wake_both(id);
            self.maybe_remove(id);
        } else if flags.contains(Flags::FIN) && !s.fin_received {
            s.fin_received = true;
            if s.read_waiting {
                s.read_waiting = false;
                self.events.push_back(Event::Readable(id));
            }
            if s.released {
                s.recv_buf.clear();
                s.recv_buffered = 0;
            }
            self.maybe_remove(id);
        }
    }

    pub(super) fn wake_both(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.read_waiting {
            s.read_waiting = false;
            self.events.push_back(Event::Readable(id));
        }
        if s.write_waiting {
            s.write_waiting = false;
            self.events.push_back(Event::Writable(id));
        }
    }

    pub(super) fn maybe_remove(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !s.is_finished() || s.in_send_queue {
            return;
        }
        let outbound_unacked = s.outbound && !s.acked;
        let window = s.recv_window;
        self.streams.remove(&id);
        self.session_window -= u64::from(window);
        if outbound_unacked {
            self.pending_open -= 1;
            if self.open_waiting {
                self.open_waiting = false;
                self.events.push_back(Event::CanOpen);
            }
        }
    }

    pub(super) fn queue_ctrl(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.in_ctrl_queue {
                s.in_ctrl_queue = true;
                self.ctrl_streams.push_back(id);
            }
        }
    }
}
