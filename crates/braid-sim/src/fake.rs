//! A tiny stand-in engine for testing the simulator itself: it stripes chunks over whatever
//! link asks first and reorders them, with no acknowledgements, no resends, no timers.

use std::collections::{BTreeMap, HashMap, VecDeque};

use braid_proto::Time;
use braid_proto::agg::{
    Config, ConnectionError, ConnectionStats, Event, LinkDeath, LinkId, LinkStats, Read, WriteError,
};
use bytes::Bytes;

use crate::endpoint::Endpoint;

/// Frame: type (0 data, 1 fin) | seq u64 | len u32 | payload.
pub(crate) const HEADER: usize = 13;

#[derive(Debug, Default)]
pub(crate) struct Fake {
    chunk: usize,
    send_limit: u64,
    pending: Vec<u8>,
    pos: usize,
    seq: u64,
    fin_pending: bool,
    fin_sent: bool,
    wants_writable: bool,
    next_id: u64,
    alive: Vec<LinkId>,
    parse: HashMap<LinkId, Vec<u8>>,
    reorder: BTreeMap<u64, Vec<u8>>,
    reorder_bytes: u64,
    recv_next: u64,
    ready: VecDeque<Bytes>,
    ready_bytes: u64,
    fin_at: Option<u64>,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    /// Flip one bit of the byte at this stream offset when sending (to test detection).
    pub corrupt_at: Option<u64>,
}

impl Fake {
    pub fn new(config: Config) -> Self {
        Fake {
            chunk: config.chunk_size,
            send_limit: config.send_buffer,
            ..Fake::default()
        }
    }

    fn note_recv(&mut self) {
        let held = self.reorder_bytes + self.ready_bytes;
        self.stats.recv_buffered = held;
        self.stats.recv_buffered_peak = self.stats.recv_buffered_peak.max(held);
    }
}

impl Endpoint for Fake {
    fn add_link(&mut self, _now: Time) -> LinkId {
        let id = LinkId(self.next_id);
        self.next_id += 1;
        self.alive.push(id);
        id
    }
    fn remove_link(&mut self, link: LinkId, _now: Time) {
        self.alive.retain(|&l| l != link);
        self.events.push_back(Event::LinkClosed(link));
    }
    fn link_failed(&mut self, link: LinkId, _now: Time) {
        if self.alive.contains(&link) {
            self.alive.retain(|&l| l != link);
            self.events.push_back(Event::LinkDead {
                link,
                reason: LinkDeath::Failed,
            });
        }
    }
    fn handle_input(&mut self, link: LinkId, data: &[u8], _now: Time) {
        let buf = self.parse.entry(link).or_default();
        buf.extend_from_slice(data);
        let mut at = 0;
        let mut frames = Vec::new();
        while buf.len() - at >= HEADER {
            let kind = buf[at];
            let seq = u64::from_be_bytes(buf[at + 1..at + 9].try_into().unwrap_or_default());
            let len =
                u32::from_be_bytes(buf[at + 9..at + 13].try_into().unwrap_or_default()) as usize;
            if buf.len() - at < HEADER + len {
                break;
            }
            frames.push((kind, seq, buf[at + HEADER..at + HEADER + len].to_vec()));
            at += HEADER + len;
        }
        buf.drain(..at);
        for (kind, seq, payload) in frames {
            if kind == 1 {
                self.fin_at = Some(seq);
            } else {
                self.reorder_bytes += payload.len() as u64;
                self.reorder.insert(seq, payload);
            }
        }
        let mut any = false;
        while let Some(p) = self.reorder.remove(&self.recv_next) {
            self.recv_next += p.len() as u64;
            self.reorder_bytes -= p.len() as u64;
            self.ready_bytes += p.len() as u64;
            self.ready.push_back(Bytes::from(p));
            any = true;
        }
        self.note_recv();
        if any || self.fin_at == Some(self.recv_next) {
            self.events.push_back(Event::Readable);
        }
    }
    fn poll_transmit(&mut self, link: LinkId, _now: Time, max: usize, out: &mut Vec<u8>) -> usize {
        if !self.alive.contains(&link) {
            return 0;
        }
        let start = out.len();
        while out.len() - start < max {
            let avail = self.pending.len() - self.pos;
            if avail > 0 {
                let n = avail.min(self.chunk);
                out.push(0);
                out.extend_from_slice(&self.seq.to_be_bytes());
                out.extend_from_slice(&(n as u32).to_be_bytes());
                let from = out.len();
                out.extend_from_slice(&self.pending[self.pos..self.pos + n]);
                if let Some(c) = self.corrupt_at {
                    if (self.seq..self.seq + n as u64).contains(&c) {
                        out[from + (c - self.seq) as usize] ^= 1;
                        self.corrupt_at = None;
                    }
                }
                self.pos += n;
                self.seq += n as u64;
                self.stats.send_buffered = (self.pending.len() - self.pos) as u64;
            } else if self.fin_pending && !self.fin_sent {
                out.push(1);
                out.extend_from_slice(&self.seq.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                self.fin_sent = true;
            } else {
                break;
            }
        }
        if self.pos > 1 << 20 && self.pos * 2 > self.pending.len() {
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
        if self.wants_writable && out.len() > start {
            self.wants_writable = false;
            self.events.push_back(Event::Writable);
        }
        out.len() - start
    }
    fn handle_timeout(&mut self, _now: Time) {}
    fn poll_timeout(&self) -> Option<Time> {
        None
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if self.fin_pending {
            return Err(WriteError::Finished);
        }
        let held = (self.pending.len() - self.pos) as u64;
        let n = (self.send_limit.saturating_sub(held) as usize).min(data.len());
        if n == 0 {
            self.wants_writable = true;
        }
        self.pending.extend_from_slice(&data[..n]);
        self.stats.bytes_written += n as u64;
        let held = (self.pending.len() - self.pos) as u64;
        self.stats.send_buffered = held;
        self.stats.send_buffered_peak = self.stats.send_buffered_peak.max(held);
        Ok(n)
    }
    fn finish(&mut self) -> Result<(), WriteError> {
        self.fin_pending = true;
        Ok(())
    }
    fn read(&mut self, max: usize) -> Result<Read, ConnectionError> {
        if let Some(front) = self.ready.front_mut() {
            let b = if front.len() <= max {
                self.ready.pop_front().unwrap_or_default()
            } else {
                front.split_to(max)
            };
            self.ready_bytes -= b.len() as u64;
            self.stats.bytes_read += b.len() as u64;
            self.note_recv();
            return Ok(Read::Data(b));
        }
        if self.fin_at == Some(self.recv_next) {
            Ok(Read::Finished)
        } else {
            Ok(Read::Blocked)
        }
    }
    fn stats(&self) -> ConnectionStats {
        self.stats.clone()
    }
    fn link_stats(&self, _link: LinkId) -> Option<LinkStats> {
        None
    }
}
