//! [`Connection`]: the engine's public face, gluing links, sender, receiver and scheduler.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::frame::{self, DecodeOutcome, Frame, data_flags};
use super::link::{Link, LinkDeath, LinkId, LinkState};
use super::path::{self, PathId, PathRate};
use super::recv::{Inserted, ReorderBuffer};
use super::send::SendBuffer;
use super::stats::{ConnectionStats, LinkStats};
use super::{Config, ConnectionError, WriteError, scheduler};
use crate::Time;

/// Dead links whose statistics are remembered (older ones are forgotten, so a connection
/// that redials forever stays bounded).
const DEAD_LINKS_KEPT: usize = 64;

/// Something the application or driver should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link was declared dead or failed; its unacknowledged data is being resent on others.
    /// The driver should close its socket (and may redial).
    LinkDead {
        /// Which link.
        link: LinkId,
        /// Why.
        reason: LinkDeath,
    },
    /// A link finished its graceful leave. The driver writes what `poll_transmit` still
    /// returns for it, then closes its socket.
    LinkClosed(LinkId),
    /// Data (or the end of the stream) can be read.
    Readable,
    /// Send buffer space opened up after a short write.
    Writable,
    /// Both directions finished and everything sent was acknowledged. The driver drains
    /// `poll_transmit` on every link (the last acknowledgements) before closing them.
    Closed,
    /// The connection failed.
    Failed(ConnectionError),
}

/// What the links of one path share (see [`Connection::shared_path`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct SharedPath {
    /// The path's delivery rate (bytes/s), once known.
    rate: Option<f64>,
    /// Its round trip: its links' shortest minimum one, at least `Config::window_rtt_floor`.
    rtt: Duration,
    /// The most its links may have in flight together.
    window: u64,
    /// Its links' own windows added up.
    own: u64,
    /// Its highest-ranked link (see [`path_rank`]) whose transport is not blocked: the one
    /// that may lead it (see `Connection::leads_its_path`).
    first: Option<LinkId>,
    /// The longest minimum round trip of a link that shares the window (see
    /// [`path::near_rtt`]): links farther away take another route to the same address.
    near: Duration,
}

/// How much later than another link of its path the path's leading link may deliver a
/// chunk and still take it (see `Connection::leads_its_path`).
///
/// Each link's delivery estimate is its queue over its own rate, and on a path spread over
/// several links each link's rate is its share: an idle link looks nearly as quick as the
/// leader, whose queue is what keeps the path busy. With 1 ms (a chunk's time, `CHUNK_TIME`)
/// four links through one 2 Gbit/s bottleneck stayed spread 40/33/27% as they started; with
/// 2, 3 or 5 ms the leader took over (99.9%). A link throttled on its own holds at least its
/// propagation bandwidth-delay product and two chunks at its window, each chunk a chunk's
/// time or more (16 KiB at 1 Mbit/s: 131 ms), so beyond its window it is later than an idle
/// sibling by more than its round trip plus a chunk's time.
const PATH_LEAD_SLACK: Duration = Duration::from_millis(2);

/// The order in which the links of a path take new data (see
/// `Connection::leads_its_path`): measured links before unmeasured ones, then by delivery
/// rate, then by id (the lower first), so that no two links rank the same.
fn path_rank(l: &Link, initial_window: u64) -> (bool, f64, std::cmp::Reverse<LinkId>) {
    (
        l.has_rate_sample(),
        l.rate(initial_window),
        std::cmp::Reverse(l.id),
    )
}

impl SharedPath {
    /// Whether `l`, a link of the path, shares its window.
    fn has(&self, l: &Link) -> bool {
        l.min_rtt() <= self.near
    }
}

/// The result of [`Connection::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The next bytes of the peer's stream.
    Data(Bytes),
    /// Nothing to read now; [`Event::Readable`] follows when there is.
    Blocked,
    /// The peer finished its stream; everything it sent was read.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    Failed(ConnectionError),
}

/// One end of an aggregated connection. See the [module docs](super) for the call order.
///
/// ```
/// use braid_proto::agg::{Config, Connection, Read};
/// use braid_proto::Time;
///
/// let now = Time::ZERO;
/// let (mut a, mut b) = (Connection::new(Config::default(), now), Connection::new(Config::default(), now));
/// let (la, lb) = (a.add_link(now), b.add_link(now));
/// a.write(b"hello").unwrap();
/// a.finish().unwrap();
/// let mut wire = Vec::new();
/// while a.poll_transmit(la, now, 1 << 20, &mut wire) > 0 {}
/// b.handle_input(lb, &wire, now);
/// assert_eq!(b.read(100).unwrap(), Read::Data("hello".into()));
/// assert_eq!(b.read(100).unwrap(), Read::Finished);
/// ```
#[derive(Debug)]
pub struct Connection {
    config: Config,
    links: BTreeMap<LinkId, Link>,
    dead: VecDeque<(LinkId, LinkStats)>,
    next_link: u64,
    send: SendBuffer,
    recv: ReorderBuffer,
    /// The peer accepts bytes below this offset.
    peer_window_end: u64,
    /// Window end carried by our last Ack.
    window_advertised: u64,
    window_update_pending: bool,
    writable_wanted: bool,
    /// Links that still owe the peer a Reset frame.
    reset_pending: Vec<LinkId>,
    state: State,
    no_links_since: Option<Time>,
    next_ping: u64,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    /// The paths links share (an entry per path with a live link).
    paths: BTreeMap<PathId, PathState>,
}

/// A path's delivery rate, and what its links share, worked out when first needed after
/// anything it depends on changed (an acknowledgement on the path, a link joining or
/// leaving): the sender asks at every write and every transmit, acknowledgements come in
/// batches.
#[derive(Debug, Default)]
struct PathState {
    rate: PathRate,
    shared: std::cell::Cell<Option<Option<SharedPath>>>,
}

impl Connection {
    /// A connection with no links yet.
    pub fn new(config: Config, now: Time) -> Self {
        let recv = ReorderBuffer::new(config.recv_window);
        let send = SendBuffer::new(
            config.send_buffer,
            config.unsent_limit.max(config.largest_chunk() as u64),
        );
        Connection {
            window_advertised: recv.window_end(),
            // Until the peer's first Ack, assume it uses our window size.
            peer_window_end: config.recv_window,
            config,
            links: BTreeMap::new(),
            dead: VecDeque::new(),
            next_link: 0,
            send,
            recv,
            window_update_pending: false,
            writable_wanted: false,
            reset_pending: Vec::new(),
            state: State::Open,
            no_links_since: Some(now),
            next_ping: 0,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            paths: BTreeMap::new(),
        }
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Admits a new link (after its handshake) and returns its local id. The link has a
    /// path of its own; see [`add_link_on_path`](Self::add_link_on_path) for links that
    /// share one.
    pub fn add_link(&mut self, now: Time) -> LinkId {
        let id = LinkId(self.next_link);
        self.next_link += 1;
        self.links.insert(id, Link::new(id, now));
        self.no_links_since = None;
        id
    }

    /// Admits a new link on `path`: the links of a path (TCP sockets between the same two
    /// addresses, Unix sockets on one host) share its bottleneck, and so one in-flight window
    /// besides their own (see [`PathId`]).
    pub fn add_link_on_path(&mut self, now: Time, path: PathId) -> LinkId {
        let id = self.add_link(now);
        if let Some(l) = self.links.get_mut(&id) {
            l.path = Some(path);
        }
        self.paths.entry(path).or_default();
        self.path_changed(Some(path));
        self.seed_shared_path(Some(path), now);
        id
    }

    /// Gives `link` the round trip its handshake took (the driver times the exchange that
    /// joined it). Once another live link shares its path, it is the link's first minimum
    /// round trip, as TCP and QUIC take their first sample from the handshake; it does
    /// nothing to a link that has a sample of its own by then. (Its smoothed round trip,
    /// which its timeouts are made of, still starts at its first acknowledgement.)
    ///
    /// Links that share a path share its bottleneck, and their first acknowledgements come
    /// behind all their first windows: sized from those round trips, their windows stay too
    /// large for as long as they never idle. On loopback, four fresh links' first samples
    /// were 1.5-3 ms against 0.15 ms for one link alone, and the connection held 2-3 times
    /// the memory for its first 60 ms. A link alone on its path is left to its own samples:
    /// its first acknowledgements wait behind its own first window only, and where they also
    /// wait behind the peer's data (both ways at once over a link slower back than forth) the
    /// idle round trip would size its window below what it carries (in the simulator,
    /// `scenarios/both-ways-asymmetric.toml`: 52 against 60 Mbit/s one of the ways).
    ///
    /// ```
    /// use std::time::Duration;
    /// use braid_proto::agg::{Config, Connection, PathId};
    /// use braid_proto::Time;
    ///
    /// let mut c = Connection::new(Config::default(), Time::ZERO);
    /// let a = c.add_link_on_path(Time::ZERO, PathId(1));
    /// c.handshake_rtt(a, Duration::from_millis(20), Time::ZERO);
    /// assert_eq!(c.link_stats(a).unwrap().min_rtt, Duration::ZERO, "alone: not measured yet");
    /// let b = c.add_link_on_path(Time::ZERO, PathId(1));
    /// c.handshake_rtt(b, Duration::from_millis(30), Time::ZERO);
    /// assert_eq!(c.link_stats(a).unwrap().min_rtt, Duration::from_millis(20));
    /// assert_eq!(c.link_stats(b).unwrap().min_rtt, Duration::from_millis(30));
    /// ```
    pub fn handshake_rtt(&mut self, link: LinkId, rtt: Duration, now: Time) {
        if let Some(l) = self.links.get_mut(&link) {
            l.handshake_rtt = Some(rtt);
            let path = l.path;
            self.seed_shared_path(path, now);
        }
    }

    /// Tells the engine whether `link`'s transport can take more bytes now: `true` while its
    /// socket's buffer is full (the driver's write to it waits for room), `false` once it
    /// takes bytes again. Links start unblocked.
    ///
    /// The links of a path leave new data to the one that leads it (docs/PROTOCOL.md,
    /// "Scheduling": links on one path fill in order), unless that one is blocked: a link
    /// whose TCP connection is throttled on its own, or whose congestion window collapsed,
    /// may fill its socket's buffer long before its window in the engine, and its siblings
    /// would wait for it. (MPTCP's schedulers skip a subflow whose socket has no room the
    /// same way.)
    ///
    /// ```
    /// use braid_proto::agg::{Config, Connection, PathId};
    /// use braid_proto::Time;
    ///
    /// let mut c = Connection::new(Config::default(), Time::ZERO);
    /// let a = c.add_link_on_path(Time::ZERO, PathId(1));
    /// c.link_blocked(a, true);
    /// c.write(b"hello").unwrap();
    /// assert!(c.can_send_data(a, Time::ZERO), "the engine still polls it: a hint for others");
    /// c.link_blocked(a, false);
    /// ```
    pub fn link_blocked(&mut self, link: LinkId, blocked: bool) {
        if let Some(l) = self.links.get_mut(&link)
            && l.blocked != blocked
        {
            l.blocked = blocked;
            // It may or may not lead its path now.
            let path = l.path;
            self.path_changed(path);
        }
    }

    /// Once `path` has two live links, its links' handshake round trips become their first
    /// minimum round trips (see [`handshake_rtt`](Self::handshake_rtt)).
    fn seed_shared_path(&mut self, path: Option<PathId>, now: Time) {
        let Some(p) = path else { return };
        if self.path_links(p).nth(1).is_none() {
            return;
        }
        for l in self.links.values_mut().filter(|l| l.path == path) {
            if let Some(rtt) = l.handshake_rtt.take()
                && !l.has_rtt_sample()
            {
                l.seed_min_rtt(now, rtt);
            }
        }
        self.path_changed(path);
    }

    /// Starts a graceful leave of `link`: no new data is scheduled on it; once its data is
    /// acknowledged a `LinkClose` is sent and [`Event::LinkClosed`] follows.
    pub fn remove_link(&mut self, link: LinkId, _now: Time) {
        if let Some(l) = self.links.get_mut(&link)
            && l.state == LinkState::Active
        {
            l.state = LinkState::Draining;
            let path = l.path;
            self.path_changed(path);
        }
    }

    /// The link failed loudly (EOF, I/O error): it is dead, its data is resent on others.
    /// A link that already left gracefully is just forgotten.
    pub fn link_failed(&mut self, link: LinkId, now: Time) {
        match self.links.get(&link).map(|l| l.state) {
            Some(LinkState::Closed) => {
                self.forget(link);
            }
            Some(_) => self.kill(link, LinkDeath::Failed, now),
            None => {}
        }
    }

    /// Bytes read from `link`. A protocol violation kills that link only (see
    /// [`Event::LinkDead`]); input for an unknown or dead link is ignored.
    pub fn handle_input(&mut self, link: LinkId, data: &[u8], now: Time) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if !l.is_live() || data.is_empty() {
            return;
        }
        l.input.extend_from_slice(data);
        self.process_input(link, now);
    }

    /// Like [`Connection::handle_input`], taking ownership of the bytes: when the link has
    /// no partial frame pending (the reader handed over whole frames, see
    /// [`frame::whole_frames_len`]) the buffer is used as it is and chunk payloads are split
    /// out of it without copying.
    pub fn handle_input_buf(&mut self, link: LinkId, data: BytesMut, now: Time) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if !l.is_live() || data.is_empty() {
            return;
        }
        if l.input.is_empty() {
            l.input = data;
        } else {
            l.input.extend_from_slice(&data);
        }
        self.process_input(link, now);
    }

    fn process_input(&mut self, link: LinkId, now: Time) {
        if let Some(l) = self.links.get_mut(&link) {
            l.last_recv = now;
        }
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return;
            };
            if !l.is_live() && l.state != LinkState::Closed {
                return;
            }
            match Frame::decode(&mut l.input) {
                Ok(None) => break,
                Ok(Some(DecodeOutcome::Frame(f))) => {
                    if let Err(why) = self.on_frame(link, f, now) {
                        self.kill(link, LinkDeath::Protocol(why), now);
                        return;
                    }
                }
                Ok(Some(DecodeOutcome::Corrupt { seq, .. })) => {
                    let why = format!("checksum mismatch in chunk at offset {seq}");
                    self.kill(link, LinkDeath::Protocol(why), now);
                    return;
                }
                Err(e) => {
                    self.kill(link, LinkDeath::Protocol(e.to_string()), now);
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, id: LinkId, f: Frame, now: Time) -> Result<(), String> {
        match f {
            Frame::Data {
                seq,
                flags,
                payload,
            } => {
                let l = self.links.get_mut(&id).expect("caller checked");
                if l.close_received {
                    return Err("data after LinkClose".into());
                }
                l.frames_received += 1;
                l.ack_pending = true;
                l.stats.bytes_received += payload.len() as u64;
                let fin = flags & data_flags::FIN != 0;
                match self.recv.insert(seq, payload, fin) {
                    Ok(Inserted::Readable) => self.events.push_back(Event::Readable),
                    Ok(Inserted::Nothing) => {}
                    Err(v) => return Err(v.to_string()),
                }
                self.check_closed();
            }
            Frame::Ack {
                link_frames,
                cumulative,
                window_end,
            } => self.on_ack(id, link_frames, cumulative, window_end, now)?,
            Frame::Ping { token } => {
                let l = self.links.get_mut(&id).expect("caller checked");
                if l.pongs_pending.len() >= 16 {
                    return Err("too many unanswered pings".into());
                }
                l.pongs_pending.push(token);
            }
            Frame::Pong { token } => {
                let l = self.links.get_mut(&id).expect("caller checked");
                if let Some((t, sent)) = l.ping_outstanding
                    && t == token
                {
                    l.ping_outstanding = None;
                    l.last_answer = now;
                    l.rtt_sample(now, now.saturating_since(sent));
                    // It may lower the link's minimum round trip, so the path's.
                    let path = l.path;
                    self.path_changed(path);
                }
            }
            Frame::Reset { code } => {
                self.fail(ConnectionError::PeerReset(code));
            }
            Frame::LinkClose => {
                let l = self.links.get_mut(&id).expect("caller checked");
                l.close_received = true;
                if l.state == LinkState::Active {
                    l.state = LinkState::Draining;
                }
                if l.close_sent {
                    l.state = LinkState::Closed;
                    self.events.push_back(Event::LinkClosed(id));
                    // Nothing more goes either way on it: keep only its statistics, so a
                    // connection whose links come and go stays bounded.
                    self.forget(id);
                } else {
                    // It no longer shares its path's window (`forget` also tells the path).
                    let path = l.path;
                    self.path_changed(path);
                }
            }
            Frame::Hello { .. } | Frame::Welcome { .. } | Frame::Refuse { .. } => {
                return Err("handshake frame on an admitted link".into());
            }
        }
        Ok(())
    }

    fn on_ack(
        &mut self,
        id: LinkId,
        link_frames: u64,
        cumulative: u64,
        window_end: u64,
        now: Time,
    ) -> Result<(), String> {
        let l = self.links.get_mut(&id).expect("caller checked");
        if link_frames > l.frames_sent || link_frames < l.frames_acked {
            return Err(format!(
                "ack for {link_frames} frames, {} sent, {} acked before",
                l.frames_sent, l.frames_acked
            ));
        }
        let limit = self.send.next_seq() + u64::from(self.send.is_finished());
        if cumulative > limit {
            return Err(format!("cumulative ack {cumulative} beyond sent {limit}"));
        }
        self.peer_window_end = self.peer_window_end.max(window_end);
        let (path, mut acked) = (l.path, 0);
        // Its rate and round trip may change: so may what its path shares.
        let any = l.frames_acked < link_frames;
        while l.frames_acked < link_frames {
            let t = l.on_acked(now).expect("count checked");
            acked += t.len;
            if let Some(n) = self.send.ack(t.seq) {
                self.stats.bytes_acked += n;
            }
        }
        if let Some(p) = path
            && acked > 0
        {
            let rtt = self.path_links(p).map(Link::srtt).max().unwrap_or_default();
            if let Some(state) = self.paths.get_mut(&p) {
                state.rate.on_acked(now, acked, rtt);
            }
        }
        if any {
            self.path_changed(path);
        }
        self.stats.bytes_acked += self.send.ack_cumulative(cumulative);
        self.check_writable_event();
        self.check_closed();
        Ok(())
    }

    fn check_closed(&mut self) {
        if self.state == State::Open
            && self.send.is_finished()
            && self.send.all_acked()
            && self.recv.fin_received()
        {
            self.state = State::Closed;
            self.events.push_back(Event::Closed);
        }
    }

    fn fail(&mut self, e: ConnectionError) {
        if matches!(self.state, State::Failed(_)) {
            return;
        }
        self.state = State::Failed(e.clone());
        self.events.push_back(Event::Failed(e));
    }

    /// Declares `id` dead and queues its unacknowledged chunks for resending.
    fn kill(&mut self, id: LinkId, reason: LinkDeath, now: Time) {
        let Some(mut l) = self.links.remove(&id) else {
            return;
        };
        if !l.is_live() {
            self.links.insert(id, l);
            return;
        }
        for t in l.in_flight.drain(..) {
            self.send.lost_on(t.seq, id);
        }
        l.in_flight_bytes = 0;
        l.state = LinkState::Dead;
        l.stats.in_flight = 0;
        l.stats.state = Some(LinkState::Dead);
        self.stats.links_died += 1;
        self.remember_dead(id, l.stats.clone());
        self.prune_path(l.path);
        self.events.push_back(Event::LinkDead { link: id, reason });
        // Tell the peer where we stand on the links that remain.
        for o in self.links.values_mut() {
            o.ack_pending = true;
        }
        if !self.links.values().any(Link::is_live) {
            self.no_links_since.get_or_insert(now);
        }
    }

    fn forget(&mut self, id: LinkId) {
        if let Some(l) = self.links.remove(&id) {
            let mut s = l.stats.clone();
            s.state = Some(l.state);
            self.remember_dead(id, s);
            self.prune_path(l.path);
        }
        if !self.links.values().any(Link::is_live) && self.no_links_since.is_none() {
            // A graceful leave of the last link: the grace timer starts from the next
            // timeout call (no `now` here).
            self.no_links_since = Some(Time::ZERO);
        }
    }

    /// Forgets `path`'s rate once no live link is left on it (a link that joins it later
    /// starts a new measurement).
    fn prune_path(&mut self, path: Option<PathId>) {
        self.path_changed(path);
        if let Some(p) = path
            && self.path_links(p).next().is_none()
        {
            self.paths.remove(&p);
        }
    }

    /// Panics if the paths' bookkeeping is off: an entry per path with a live link and no
    /// other, and every cached [`SharedPath`] what working it out afresh gives. For the
    /// fuzzer and property tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        for (p, state) in &self.paths {
            assert!(
                self.path_links(*p).next().is_some(),
                "{p:?} kept without links"
            );
            if let Some(cached) = state.shared.get() {
                let fresh = self.work_out_shared_path(*p, state.rate.get());
                assert_eq!(cached, fresh, "stale shared window of {p:?}");
            }
        }
        for l in self.links.values().filter(|l| l.is_live()) {
            if let Some(p) = l.path {
                assert!(self.paths.contains_key(&p), "{} on untracked {p:?}", l.id);
            }
        }
    }

    /// Something [`shared_path`](Self::shared_path) depends on changed for `path`.
    fn path_changed(&self, path: Option<PathId>) {
        if let Some(state) = path.and_then(|p| self.paths.get(&p)) {
            state.shared.set(None);
        }
    }

    /// The live links on `path`.
    fn path_links(&self, path: PathId) -> impl Iterator<Item = &Link> {
        self.links
            .values()
            .filter(move |l| l.path == Some(path) && l.is_live())
    }

    /// What `path`'s links share, if they do: once two or more of them carry data. Until the
    /// path's rate is known their window is the sum of their own (what they would hold
    /// anyway), which the path's leader may fill (see [`Connection::leads_its_path`]).
    fn shared_path(&self, path: PathId) -> Option<SharedPath> {
        let state = self.paths.get(&path)?;
        if let Some(known) = state.shared.get() {
            return known;
        }
        let shared = self.work_out_shared_path(path, state.rate.get());
        state.shared.set(Some(shared));
        shared
    }

    fn work_out_shared_path(&self, path: PathId, rate: Option<f64>) -> Option<SharedPath> {
        let active = || {
            self.path_links(path)
                .filter(|l| l.state == LinkState::Active && !l.close_received)
        };
        let shortest = (active().filter(|l| l.has_rate_sample()))
            .map(Link::min_rtt)
            .min()?;
        let near = path::near_rtt(shortest);
        let (mut n, mut chunk, mut own) = (0, 0, 0u64);
        let init = self.config.initial_link_window;
        let mut first: Option<&Link> = None;
        for l in active().filter(|l| l.min_rtt() <= near) {
            n += 1;
            chunk = chunk.max(l.chunk_size(&self.config) as u64);
            own = own.saturating_add(l.unpenalized_window(&self.config));
            if !l.blocked && first.is_none_or(|f| path_rank(l, init) > path_rank(f, init)) {
                first = Some(l);
            }
        }
        if n < 2 {
            return None;
        }
        let rtt = shortest.max(self.config.window_rtt_floor);
        Some(SharedPath {
            rate,
            rtt,
            window: rate.map_or(own, |rate| path::shared_window(rate, rtt, chunk, n)),
            own,
            first: first.map(|l| l.id),
            near,
        })
    }

    fn remember_dead(&mut self, id: LinkId, stats: LinkStats) {
        if self.dead.len() == DEAD_LINKS_KEPT {
            self.dead.pop_front();
        }
        self.dead.push_back((id, stats));
    }

    /// Appends frames for `link` to `out`, about `max` bytes at most (a frame is never
    /// split, so one chunk plus header may go over). Returns the bytes appended; 0 means the
    /// engine has nothing for this link now. Call it for every link after every input,
    /// timeout, read or write, and whenever a link can take more bytes.
    pub fn poll_transmit(
        &mut self,
        link: LinkId,
        now: Time,
        max: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let n = self.transmit_into(link, now, max, out);
        if n > 0 {
            self.check_writable_event();
        }
        n
    }

    /// Like [`Connection::poll_transmit`], but without copying payloads: appends segments
    /// to `out` (frame headers and control frames in small buffers, chunk payloads as shared
    /// [`Bytes`]) for a vectored write. Returns the bytes appended.
    pub fn poll_transmit_vectored(
        &mut self,
        link: LinkId,
        now: Time,
        max: usize,
        out: &mut Vec<Bytes>,
    ) -> usize {
        let mut sink = VectoredSink {
            segments: out,
            scratch: BytesMut::new(),
            written: 0,
        };
        let n = self.transmit_into(link, now, max, &mut sink);
        sink.flush();
        if n > 0 {
            self.check_writable_event();
        }
        n
    }

    /// Whether [`Connection::poll_transmit`] could return anything for `link` now (frames it
    /// owes or data it could send). `false` means the poll would return 0: a driver with many
    /// links idle (most of a path's links, while one of them carries the data) can skip
    /// polling them.
    ///
    /// ```
    /// use braid_proto::agg::{Config, Connection};
    /// use braid_proto::Time;
    ///
    /// let mut c = Connection::new(Config::default(), Time::ZERO);
    /// let l = c.add_link(Time::ZERO);
    /// while c.poll_transmit(l, Time::ZERO, 1 << 20, &mut Vec::new()) > 0 {}
    /// assert!(!c.may_transmit(l, Time::ZERO), "nothing to say");
    /// c.write(b"hello").unwrap();
    /// assert!(c.may_transmit(l, Time::ZERO));
    /// ```
    pub fn may_transmit(&self, link: LinkId, now: Time) -> bool {
        // Mirrors `transmit_into`: keep the two in step (the simulation and the fuzzer check
        // that nothing goes out where this says no).
        if self.reset_pending.contains(&link) {
            return true;
        }
        if self.state != State::Open && self.state != State::Closed {
            return false;
        }
        let Some(l) = self.links.get(&link) else {
            return false;
        };
        if !l.is_live() {
            return false;
        }
        !l.pongs_pending.is_empty()
            || l.ack_pending
            || l.ping_due(now, self.config.keepalive)
            || self.window_update_pending
            || (l.state == LinkState::Draining && l.in_flight.is_empty() && !l.close_sent)
            || self.can_send_data(link, now)
    }

    /// Whether [`Connection::poll_transmit`] could put data (new or resent chunks) on `link`
    /// now: the connection is open, there is data to send, and the link is active with room
    /// in its window and in its path's. A cheap check for a caller that polls a link only to
    /// move data, e.g. right after the application wrote: `false` means polling it would add
    /// no data (it may still owe control frames, which the regular polling sends).
    ///
    /// ```
    /// use braid_proto::agg::{Config, Connection};
    /// use braid_proto::Time;
    ///
    /// let mut c = Connection::new(Config::default(), Time::ZERO);
    /// let l = c.add_link(Time::ZERO);
    /// assert!(!c.can_send_data(l, Time::ZERO), "nothing written yet");
    /// c.write(b"hello").unwrap();
    /// assert!(c.can_send_data(l, Time::ZERO));
    /// ```
    pub fn can_send_data(&self, link: LinkId, now: Time) -> bool {
        self.state == State::Open
            && (self.send.has_new() || self.send.has_resend())
            && self.has_data_room(link, now)
            && self.shared_room(link, now).is_none_or(|(w, used)| used < w)
            && (self.send.has_resend() || !self.leaves_new_data(link, now))
    }

    /// Whether `link` would leave the next new chunk to a link of its path that comes
    /// before it, as `transmit_data` decides it (see [`Connection::sibling_goes_first`]):
    /// then polling it is for nothing. Most links of a path are idle while one carries the
    /// data; on loopback with 8 links, the driver polled them 2.6-6k times per GB for nothing,
    /// each poll several passes over the path's links.
    fn leaves_new_data(&self, link: LinkId, now: Time) -> bool {
        let backlog = self.send.sendable(self.peer_window_end);
        let Some(l) = self.links.get(&link).filter(|_| backlog > 0) else {
            return false;
        };
        self.sibling_goes_first(link, now, self.chunk_len(l, backlog), backlog)
    }

    /// When the chunk at the head of the line counts as stuck: when the last of the links it
    /// is on stalls (see `Link::stalled_at`), unless it was resent or flagged already.
    fn head_stalls_at(&self) -> Option<(u64, Time)> {
        let (seq, c) = self.send.head_of_line()?;
        if c.stalled || c.opportunistic || c.links.is_empty() {
            return None;
        }
        let floor = self.config.stall_floor();
        let mut at = Time::ZERO;
        for id in &c.links {
            at = at.max(self.links.get(id)?.stalled_at(c.expected_arrival, floor)?);
        }
        Some((seq, at))
    }

    /// The window `link` shares with the other links of its path and what they (`link`
    /// included) have in flight, if it shares one. For the path's leader (see
    /// [`Connection::leads_its_path`]) the window is the links' own windows added up where
    /// that is more: what they would hold spread, held by the one link that carries the data.
    ///
    /// The path's window comes from what the path delivered; a leader's own window, from
    /// what the leader delivered, is as large as one link alone would have only if it has
    /// had that much in flight: capped by the path's window, a fresh 4-link connection's
    /// leader settled lower than one link alone (on loopback, 1.25 against 1.7-1.9 MB in
    /// flight, and 0.898 of one link's goodput against 0.942 with this, 60 paired rounds).
    fn shared_room(&self, link: LinkId, now: Time) -> Option<(u64, u64)> {
        let l = self.links.get(&link)?;
        let (p, shared) = self.shared_of(l)?;
        let used = (self.path_links(p).filter(|l| shared.has(l)))
            .map(|l| l.in_flight_bytes)
            .sum();
        let window = if shared.window < shared.own && self.leads_its_path(l, now) {
            shared.own
        } else {
            shared.window
        };
        Some((window, used))
    }

    /// Data handed to links makes room under the unsent limit, as acknowledgements make
    /// room under `send_buffer`: a writer waiting for either is told (once a quarter of the
    /// room is back, see `SendBuffer::writable`).
    ///
    /// The limit is recomputed only here for a waiting writer, and at each write: computing
    /// it after every transmit and acknowledgement cost 1.4% of a 4-link sender's CPU.
    fn check_writable_event(&mut self) {
        if !self.writable_wanted {
            return;
        }
        self.send.set_unsent_limit(self.unsent_limit());
        if self.send.writable() {
            self.writable_wanted = false;
            self.events.push_back(Event::Writable);
        }
    }

    /// The unsent limit now: `Config::unsent_limit`, or, if more, what all links together
    /// deliver in two of the slowest link's round trips: the backlog the scheduler needs to
    /// see for every link to be worth using (a shorter one leaves slow links idle).
    ///
    /// Round trips are the links' minimum ones (at least `window_rtt_floor`), like their
    /// windows: smoothed ones include the queues the windows themselves build (on loopback
    /// with four links they made the floor 5-6 MB). The limit is not multiplied by the number
    /// of links either: more links do not make the application's bytes go out any sooner, and
    /// a larger backlog lets the copies go cold (4 links on loopback: 66-69% of raw TCP with
    /// 16 MiB unsent, 71-73% with 4 MiB, against 79% for 1 link).
    ///
    /// Links that share a path count as one, with the path's rate and round trip (see
    /// [`PathId`]): their own rates added up overstate it.
    fn unsent_limit(&self) -> u64 {
        let init = self.config.initial_link_window;
        let (mut rate, mut rtt) = (0.0f64, Duration::ZERO);
        for shared in self.paths.keys().filter_map(|p| self.shared_path(*p)) {
            if let Some(r) = shared.rate {
                rate += r;
                rtt = rtt.max(shared.rtt);
            }
        }
        for l in self.links.values().filter(|l| l.state == LinkState::Active) {
            if (l.path.and_then(|p| self.shared_path(p)))
                .is_some_and(|s| s.rate.is_some() && s.has(l))
            {
                continue;
            }
            rate += l.rate(init);
            // A link with no round trip measured yet counts its guessed rate (its initial
            // window over the initial round trip, little) but not the guessed round trip:
            // times the rates of the links already measured, that made a 29 MB limit on
            // loopback the moment one of four new links had its first sample.
            if l.has_rtt_sample() {
                rtt = rtt.max(l.min_rtt().max(self.config.window_rtt_floor));
            }
        }
        let backlog = (2.0 * rate * rtt.as_secs_f64()).min(u64::MAX as f64 / 2.0) as u64;
        backlog
            .max(self.config.unsent_limit)
            .max(self.config.largest_chunk() as u64)
    }

    fn transmit_into(&mut self, link: LinkId, now: Time, max: usize, out: &mut impl Sink) -> usize {
        let start = out.written();
        if let Some(i) = self.reset_pending.iter().position(|l| *l == link) {
            self.reset_pending.swap_remove(i);
            if let State::Failed(ConnectionError::LocalReset(code)) = self.state {
                out.put_frame(&Frame::Reset { code });
            }
            return out.written() - start;
        }
        if self.state != State::Open && self.state != State::Closed {
            return 0;
        }
        let window_update =
            self.window_update_pending && self.best_link_for_control() == Some(link);
        let Some(l) = self.links.get_mut(&link) else {
            return 0;
        };
        if !l.is_live() {
            return 0;
        }
        // After our LinkClose we send no data and no pings, but still answer: the peer may
        // be waiting for acknowledgements before it can send its own LinkClose.
        for token in l.pongs_pending.drain(..) {
            out.put_frame(&Frame::Pong { token });
        }
        let ping_due = l.ping_due(now, self.config.keepalive);
        if l.ack_pending || ping_due || window_update {
            l.ack_pending = false;
            out.put_frame(&Frame::Ack {
                link_frames: l.frames_received,
                cumulative: self.recv.cumulative(),
                window_end: self.recv.window_end(),
            });
            self.window_advertised = self.recv.window_end();
            self.window_update_pending = false;
        }
        if ping_due {
            let token = self.next_ping;
            self.next_ping += 1;
            l.ping_outstanding = Some((token, now));
            l.ping_requested = false;
            l.last_ping_sent = now;
            out.put_frame(&Frame::Ping { token });
        }
        if self.state == State::Open {
            self.transmit_data(link, now, max.saturating_sub(out.written() - start), out);
        }
        let l = self.links.get_mut(&link).expect("present");
        if l.state == LinkState::Draining && l.in_flight.is_empty() && !l.close_sent {
            out.put_frame(&Frame::LinkClose);
            l.close_sent = true;
            if l.close_received {
                l.state = LinkState::Closed;
                self.events.push_back(Event::LinkClosed(link));
                self.forget(link);
            }
        }
        out.written() - start
    }

    /// The live link with the lowest smoothed RTT: where window updates go.
    fn best_link_for_control(&self) -> Option<LinkId> {
        self.links
            .values()
            .filter(|l| l.is_live() && !l.close_sent)
            .min_by_key(|l| l.srtt())
            .map(|l| l.id)
    }

    /// Schedules chunks on `id` (resends first, then new data), within its window.
    fn transmit_data(&mut self, id: LinkId, now: Time, max: usize, out: &mut impl Sink) {
        let chunk = self.links[&id].chunk_size(&self.config);
        let init = self.config.initial_link_window;
        // The window this link shares with the others on its path, and what they (this one
        // included) have in flight: worked out once per call, once the link could send.
        let mut shared: Option<Option<(u64, u64)>> = None;
        let start = out.written();
        while out.written() - start < max {
            if !self.has_data_room(id, now) {
                return;
            }
            let l = &self.links[&id];
            if !(self.send.has_new() || self.send.has_resend()) {
                // Room and nothing to send: what the path delivers now is the application's
                // pace, not the path's.
                if let Some(state) = l.path.and_then(|p| self.paths.get_mut(&p)) {
                    state.rate.app_limited();
                }
                return;
            }
            let (w, used) = shared
                .get_or_insert_with(|| self.shared_room(id, now))
                .unwrap_or((u64::MAX, 0));
            // What this call added counts with its frame headers: a little early, never late.
            if used.saturating_add((out.written() - start) as u64) >= w {
                return;
            }
            // 1. Chunks whose link died or stalled, on the best other link that has room.
            if let Some(seq) = self.send.next_resend(id) {
                let c = self.send.chunk(seq);
                let (len, on) = c.map_or((0, &[][..]), |c| (c.data.len() as u64, &c.links[..]));
                if scheduler::best_with_room(&self.links, on, now, len, &self.config) == Some(id) {
                    self.retransmit(id, seq, now, out);
                    continue;
                }
            }
            // 2. New data, if this link is where it arrives soonest (or the faster links
            //    cannot carry the whole backlog before this one delivers it).
            if self.send.has_new() {
                let backlog = self.send.sendable(self.peer_window_end);
                let len = self.chunk_len(&self.links[&id], backlog);
                if (len > 0 || self.send.unsent_len() == 0)
                    && scheduler::worth_sending(&self.links, id, len, backlog, &self.config)
                    && !self.sibling_goes_first(id, now, len, backlog)
                    && let Some((seq, data, fin)) = self.send.cut(chunk, self.peer_window_end)
                {
                    let arrival = self.links[&id].expected_delivery(now, data.len() as u64, init);
                    self.emit_data(id, seq, &data, fin, now, out);
                    self.send.insert(seq, data, fin, id, arrival);
                    continue;
                }
                // 3. Blocked by the peer's window: resend the chunk holding it up, if this
                //    link delivers it sooner, and penalise the link it is stuck on.
                if backlog == 0
                    && self.send.unsent_len() > 0
                    && let Some(seq) =
                        scheduler::opportunistic(&self.send, &self.links, id, now, &self.config)
                {
                    self.resend_opportunistically(id, seq, now, out);
                    continue;
                }
            }
            return;
        }
    }

    /// `l`'s path and what its links share, if `l` shares it.
    fn shared_of(&self, l: &Link) -> Option<(PathId, SharedPath)> {
        let path = l.path?;
        let shared = self.shared_path(path).filter(|s| s.has(l))?;
        Some((path, shared))
    }

    /// The length of the new chunk `l` would cut from a sendable `backlog`: what
    /// `transmit_data` cuts, and so what every check of whether a link would send one (its
    /// own or a sibling's) must ask about.
    fn chunk_len(&self, l: &Link, backlog: u64) -> u64 {
        backlog.min(l.chunk_size(&self.config) as u64)
    }

    /// Whether `id` may take more data: it is usable and under its own window, or it leads
    /// the links of its path (see [`Connection::leads_its_path`]). The window the path's
    /// links share is checked apart.
    fn has_data_room(&self, id: LinkId, now: Time) -> bool {
        self.links.get(&id).is_some_and(|l| {
            scheduler::usable(l)
                && (scheduler::has_room(l, now, &self.config) || self.leads_its_path(l, now))
        })
    }

    /// The links of one path reach the peer through the same bottleneck, so which of them
    /// carries a chunk changes little for its delivery, while each link that carries data
    /// costs both ends per byte (more and smaller writes and reads, more buffers in the
    /// caches: on loopback 4 links spread 90/10 ran at 87% of one link). So new data fills
    /// them in order, the link with the highest delivery rate (the one that has been carrying
    /// the data) first, with the others only taking what it would deliver later.
    ///
    /// `l` leads its path when it shares the path's window, no usable link of it ranks
    /// higher, and it would deliver a chunk no more than [`PATH_LEAD_SLACK`] after the
    /// others of the path would (links whose transport is blocked, see
    /// [`Connection::link_blocked`], do not count). Then it may fill the path's window (see
    /// [`Connection::shared_room`]), not only its own: a link's own window is twice its
    /// rate's bandwidth-delay product, and where its rate is its share of a path spread over
    /// several links, that window holds it to that share. Where each link is throttled on
    /// its own (`count=N` against per-connection limits), a link beyond its own window is
    /// queued, soon later than the others by more than the slack, and they take the data,
    /// as before.
    ///
    /// It starts with the first acknowledgements, before the path's rate is known (its
    /// window is then the sum of its links' own, what they would hold spread anyway): on
    /// loopback, spreading the data evenly until then cost a fresh 4-link connection a fifth
    /// more sender CPU for its first 100 MB (20.7 against 17.2 ms; one link 17.8).
    fn leads_its_path(&self, l: &Link, now: Time) -> bool {
        if now < l.penalized_until {
            return false;
        }
        let Some((path, shared)) = self.shared_of(l) else {
            return false;
        };
        if shared.first != Some(l.id) {
            return false;
        }
        let init = self.config.initial_link_window;
        let chunk = l.chunk_size(&self.config) as u64;
        let mine = l.delivery_secs(chunk, init) - PATH_LEAD_SLACK.as_secs_f64();
        !self.path_links(path).any(|o| {
            o.id != l.id
                && !o.blocked
                && shared.has(o)
                && scheduler::usable(o)
                && o.delivery_secs(chunk, init) < mine
        })
    }

    /// Whether a link sharing `id`'s path window comes before it and would take a new chunk
    /// of `len` bytes now (see [`Connection::leads_its_path`]): then `id` leaves it that
    /// chunk. A link comes before `id` if it ranks higher on the path, would deliver the
    /// chunk no more than [`PATH_LEAD_SLACK`] after `id`, and its transport is not blocked
    /// ([`Connection::link_blocked`]).
    fn sibling_goes_first(&self, id: LinkId, now: Time, len: u64, backlog: u64) -> bool {
        let Some((path, shared)) = self.links.get(&id).and_then(|me| self.shared_of(me)) else {
            return false;
        };
        let me = &self.links[&id];
        if shared.first == Some(id) {
            // No usable link of the path that is not blocked ranks higher.
            return false;
        }
        let init = self.config.initial_link_window;
        let rank = path_rank(me, init);
        let soon_enough = me.delivery_secs(len, init) + PATH_LEAD_SLACK.as_secs_f64();
        self.path_links(path).any(|l| {
            l.id != id
                && !l.blocked
                && shared.has(l)
                && path_rank(l, init) > rank
                && l.delivery_secs(len, init) <= soon_enough
                && self.has_data_room(l.id, now)
                // With the chunk it would cut itself, as its own poll decides: asked with this
                // link's smaller chunk, a faster sibling could look worth it here and not there,
                // and each would leave the chunk to the other (the tail of a transfer stalled).
                && scheduler::worth_sending(
                    &self.links,
                    l.id,
                    self.chunk_len(l, backlog),
                    backlog,
                    &self.config,
                )
        })
    }

    /// Resends `seq` on `id` once, while its other copies are still in flight, and penalises
    /// the links those copies are on (their windows halve for a round trip of `id`).
    fn resend_opportunistically(&mut self, id: LinkId, seq: u64, now: Time, out: &mut impl Sink) {
        let penalty = now + self.links[&id].srtt();
        for other in (self.send.chunk(seq))
            .map(|c| c.links.clone())
            .unwrap_or_default()
        {
            if let Some(o) = self.links.get_mut(&other) {
                o.penalized_until = penalty;
            }
        }
        if let Some(c) = self.send.chunk_mut(seq) {
            c.opportunistic = true;
        }
        self.retransmit(id, seq, now, out);
    }

    fn retransmit(&mut self, id: LinkId, seq: u64, now: Time, out: &mut impl Sink) {
        let Some(c) = self.send.chunk(seq) else {
            return;
        };
        let (data, fin) = (c.data.clone(), c.fin);
        let arrival = self.links[&id].expected_delivery(
            now,
            data.len() as u64,
            self.config.initial_link_window,
        );
        self.emit_data(id, seq, &data, fin, now, out);
        self.send.resent(seq, id, arrival);
        let l = self.links.get_mut(&id).expect("present");
        l.stats.bytes_resent += data.len() as u64;
        self.stats.bytes_resent += data.len() as u64;
    }

    fn emit_data(
        &mut self,
        id: LinkId,
        seq: u64,
        data: &Bytes,
        fin: bool,
        now: Time,
        out: &mut impl Sink,
    ) {
        let mut flags = 0;
        if fin {
            flags |= data_flags::FIN;
        }
        if self.config.crc {
            flags |= data_flags::CRC;
        }
        out.put_data(seq, flags, data);
        let l = self.links.get_mut(&id).expect("present");
        l.on_send(seq, data.len() as u64, now);
    }

    /// Processes expired timers (liveness, grace).
    pub fn handle_timeout(&mut self, now: Time) {
        if self.state != State::Open {
            return;
        }
        let (floor, rtts) = (
            self.config.link_timeout_floor,
            self.config.link_timeout_rtts,
        );
        let expired: Vec<LinkId> = self
            .links
            .values()
            .filter(|l| l.is_live())
            .filter(|l| {
                l.awaiting_since()
                    .is_some_and(|s| now >= s + l.timeout(floor, rtts))
            })
            .map(|l| l.id)
            .collect();
        for id in expired {
            self.kill(id, LinkDeath::Timeout, now);
        }
        // The chunk the peer waits for is stuck on links that stalled (a TCP connection
        // waiting out a retransmission timeout): what those links hold is resent on others,
        // as MPTCP reinjects a subflow's data at its retransmission timeout.
        if let Some((seq, at)) = self.head_stalls_at()
            && now >= at
            && let Some(c) = self.send.chunk_mut(seq)
        {
            c.stalled = true;
            let stuck: Vec<u64> = (c.links.clone().iter())
                .filter_map(|id| self.links.get(id))
                .flat_map(|l| l.in_flight.iter().map(|t| t.seq))
                .collect();
            for seq in stuck {
                self.send.stuck(seq);
            }
        }
        let keepalive = self.config.keepalive;
        for l in self
            .links
            .values_mut()
            .filter(|l| l.is_live() && !l.close_sent)
        {
            if l.ping_outstanding.is_none() && now >= l.last_ping_sent + keepalive {
                l.ping_requested = true;
            }
        }
        if let Some(since) = self.no_links_since {
            if since == Time::ZERO && !self.links.values().any(Link::is_live) {
                self.no_links_since = Some(now);
            } else if now >= since + self.config.grace {
                self.fail(ConnectionError::NoLinks(self.config.grace));
            }
        }
    }

    /// The next time [`Connection::handle_timeout`] (or, for keepalives,
    /// [`Connection::poll_transmit`]) must be called, if any.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.state != State::Open {
            return None;
        }
        let (floor, rtts) = (
            self.config.link_timeout_floor,
            self.config.link_timeout_rtts,
        );
        let links = self.links.values().filter(|l| l.is_live()).flat_map(|l| {
            let dead = l.awaiting_since().map(|s| s + l.timeout(floor, rtts));
            // A requested ping waits for the driver's next `poll_transmit` on the link, not
            // for a timer: a deadline in the past would make drivers spin.
            let ping = (l.ping_outstanding.is_none() && !l.close_sent && !l.ping_requested)
                .then(|| l.last_ping_sent + self.config.keepalive);
            [dead, ping].into_iter().flatten()
        });
        let grace = self.no_links_since.map(|s| s + self.config.grace);
        let stall = self.head_stalls_at().map(|(_, at)| at);
        links.chain(grace).chain(stall).min()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues application bytes; returns how many were taken (0 when the send buffer is
    /// full: [`Event::Writable`] follows when it has room).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.check_writable()?;
        self.send.set_unsent_limit(self.unsent_limit());
        let n = self.send.write(data);
        if n < data.len() {
            self.writable_wanted = true;
        }
        self.stats.bytes_written += n as u64;
        Ok(n)
    }

    /// Like [`Connection::write`], but takes the application's bytes without copying them:
    /// the driver copies outside its lock, or hands over buffers it already owns. Takes only
    /// what fits in the send buffer ([`Connection::send_capacity`]) and returns how much.
    ///
    /// Each call's bytes go out as chunks of their own (at most a link's chunk size each, see
    /// `Config::max_chunk_size`); small writes are better served by [`Connection::write`],
    /// which packs them together.
    pub fn write_bytes(&mut self, data: Bytes) -> Result<usize, WriteError> {
        self.check_writable()?;
        let len = data.len();
        self.send.set_unsent_limit(self.unsent_limit());
        let n = self.send.write_bytes(data);
        if n < len {
            self.writable_wanted = true;
        }
        self.stats.bytes_written += n as u64;
        Ok(n)
    }

    /// Whether [`Connection::read`] would return data or the end of the stream now.
    pub fn is_readable(&self) -> bool {
        self.recv.has_readable()
    }

    /// Whether reading made the receive window worth advertising: the driver should call
    /// `poll_transmit` (reads that return `false` need no transmit).
    pub fn window_update_due(&self) -> bool {
        self.window_update_pending
    }

    fn check_writable(&self) -> Result<(), WriteError> {
        match &self.state {
            State::Failed(e) => Err(WriteError::Closed(e.clone())),
            _ if self.send.is_finished() => Err(WriteError::Finished),
            _ => Ok(()),
        }
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self) -> u64 {
        self.send.room_under(self.unsent_limit())
    }

    /// Ends this side's stream after what was written (half-close).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        self.check_writable()?;
        self.send.finish();
        Ok(())
    }

    /// Reads up to `max` bytes of the peer's stream.
    pub fn read(&mut self, max: usize) -> Result<Read, ConnectionError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let Some(data) = self.recv.read(max) else {
            return Ok(if self.recv.fin_received() {
                Read::Finished
            } else {
                Read::Blocked
            });
        };
        self.stats.bytes_read += data.len() as u64;
        let grown = self.recv.window_end() - self.window_advertised;
        if grown >= (self.config.recv_window / 4).max(1) {
            self.window_update_pending = true;
        }
        Ok(Read::Data(data))
    }

    /// Aborts the connection: unsent and unacknowledged data is dropped and the peer sees
    /// [`ConnectionError::PeerReset`] with `code`. Drain `poll_transmit` on every link to send
    /// the reset, then close them.
    pub fn abort(&mut self, code: u32, _now: Time) {
        if self.state != State::Open {
            return;
        }
        self.reset_pending = self
            .links
            .values()
            .filter(|l| l.is_live())
            .map(|l| l.id)
            .collect();
        self.fail(ConnectionError::LocalReset(code));
    }

    /// Live (not dead or closed) links.
    pub fn links(&self) -> Vec<LinkId> {
        self.links
            .values()
            .filter(|l| l.is_live())
            .map(|l| l.id)
            .collect()
    }

    /// Whether the connection ended (gracefully or not).
    pub fn is_closed(&self) -> bool {
        self.state != State::Open
    }

    /// Why the connection failed, if it did.
    pub fn error(&self) -> Option<&ConnectionError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Connection-wide counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
        s.send_buffered = self.send.buffered();
        s.send_buffered_peak = self.send.peak;
        s.recv_buffered = self.recv.buffered();
        s.recv_buffered_peak = self.recv.peak;
        s.bytes_duplicate = self.recv.duplicate_bytes;
        s
    }

    /// Counters of one link (also of recently dead links).
    pub fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        if let Some(l) = self.links.get(&link) {
            let mut s = l.stats.clone();
            s.state = Some(l.state);
            s.rate = l.rate(self.config.initial_link_window);
            return Some(s);
        }
        self.dead
            .iter()
            .find(|(id, _)| *id == link)
            .map(|(_, s)| s.clone())
    }

    /// Time until the link is declared dead if it stays silent (for monitors).
    pub fn link_timeout(&self, link: LinkId) -> Option<Duration> {
        let l = self.links.get(&link)?;
        Some(l.timeout(
            self.config.link_timeout_floor,
            self.config.link_timeout_rtts,
        ))
    }
}

/// Where [`Connection::poll_transmit`] and its vectored twin put frames.
trait Sink {
    /// Bytes appended so far.
    fn written(&self) -> usize;
    fn put_frame(&mut self, f: &Frame);
    fn put_data(&mut self, seq: u64, flags: u8, data: &Bytes);
}

impl Sink for Vec<u8> {
    fn written(&self) -> usize {
        self.len()
    }
    fn put_frame(&mut self, f: &Frame) {
        f.encode(self);
    }
    fn put_data(&mut self, seq: u64, flags: u8, data: &Bytes) {
        frame::encode_data_header(self, seq, flags, data);
        self.extend_from_slice(data);
    }
}

/// Headers and control frames gather in `scratch`; payloads go out as shared segments.
struct VectoredSink<'a> {
    segments: &'a mut Vec<Bytes>,
    scratch: BytesMut,
    written: usize,
}

impl VectoredSink<'_> {
    fn flush(&mut self) {
        if !self.scratch.is_empty() {
            self.segments.push(self.scratch.split().freeze());
        }
    }
}

impl Sink for VectoredSink<'_> {
    fn written(&self) -> usize {
        self.written
    }
    fn put_frame(&mut self, f: &Frame) {
        let before = self.scratch.len();
        f.encode(&mut self.scratch);
        self.written += self.scratch.len() - before;
    }
    fn put_data(&mut self, seq: u64, flags: u8, data: &Bytes) {
        let before = self.scratch.len();
        frame::encode_data_header(&mut self.scratch, seq, flags, data);
        self.written += self.scratch.len() - before + data.len();
        if data.is_empty() {
            return;
        }
        self.flush();
        self.segments.push(data.clone());
    }
}
