//! The scenario file: links, timed events, engine settings, the transfer.
//!
//! A scenario is TOML (see `docs/SIMULATOR.md` for the full format):
//!
//! ```toml
//! name = "three-links"
//! seed = 1
//!
//! [transfer]
//! size = "100MB"
//! direction = "a-to-b"
//!
//! [[link]]
//! rate = "40Mbit"
//! delay = "5ms"
//!
//! [[link]]
//! rate = "20Mbit"
//! delay = "15ms"
//!
//! [[event]]
//! at = "3s"
//! kind = "silent-death"
//! link = 0
//! ```
//!
//! Unknown keys are errors, and every error names the field it is about.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{BitRate, ByteSize, Span};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, a missing key or a bad value (the message names it).
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// Parsed, but a value is out of range or inconsistent.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// Path of the offending field, e.g. `link[2].rate` or `event[0].link`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A whole scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Seeds to run; the report has one row per seed (default `[1]`).
    #[serde(default = "default_seeds", deserialize_with = "seeds_de")]
    pub seed: Vec<u64>,
    /// Stop the run at this virtual time even if the transfer is not done (default 600 s).
    #[serde(default = "default_max_time")]
    pub max_time: Span,
    /// Stop (and fail) when nothing was written or delivered for this long while no reader
    /// was paused (default 30 s): the transfer is stuck.
    #[serde(default = "default_stall_limit")]
    pub stall_limit: Span,
    /// Goodput is measured from this time on (default 1 s).
    #[serde(default = "default_measure_from")]
    pub measure_from: Span,
    /// Largest piece the link model moves as one unit (default 16 KiB). Smaller is more
    /// precise and slower.
    #[serde(default = "default_segment")]
    pub segment: ByteSize,
    /// Engine settings, the same on both sides unless overridden in `engine_b`.
    #[serde(default)]
    pub engine: EngineSpec,
    /// Engine settings of side B that differ from `engine`.
    #[serde(default)]
    pub engine_b: Option<EngineSpec>,
    /// What to send.
    pub transfer: TransferSpec,
    /// The links (`[[link]]` tables).
    #[serde(default)]
    pub link: Vec<LinkSpec>,
    /// Timed events (`[[event]]` tables).
    #[serde(default)]
    pub event: Vec<EventSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![1]
}
fn default_max_time() -> Span {
    Span::secs(600)
}
fn default_stall_limit() -> Span {
    Span::secs(30)
}
fn default_measure_from() -> Span {
    Span::secs(1)
}
fn default_segment() -> ByteSize {
    ByteSize(16 * 1024)
}

fn seeds_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u64),
        Many(Vec<u64>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

/// Engine settings; each one left out keeps the engine's default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// Chunk size on slow links (and before a link's rate is known).
    pub chunk_size: Option<ByteSize>,
    /// Largest chunk, on fast links (chunks are a millisecond of a link's rate in between).
    pub max_chunk_size: Option<ByteSize>,
    /// Receive window.
    pub recv_window: Option<ByteSize>,
    /// Sender buffer limit.
    pub send_buffer: Option<ByteSize>,
    /// Unsent bytes the sender takes ahead of its links.
    pub unsent_limit: Option<ByteSize>,
    /// In-flight bytes allowed on a link before its rate is known.
    pub initial_link_window: Option<ByteSize>,
    /// Floor of the dead-link timeout.
    pub link_timeout_floor: Option<Span>,
    /// Dead-link timeout in RTTs.
    pub link_timeout_rtts: Option<u32>,
    /// Keepalive interval.
    pub keepalive: Option<Span>,
    /// How long a connection without links waits.
    pub grace: Option<Span>,
    /// CRC32C per chunk.
    pub crc: Option<bool>,
}

impl EngineSpec {
    /// The engine configuration: the engine's defaults, overridden by the fields set here.
    pub fn config(&self) -> braid_proto::agg::Config {
        let mut c = braid_proto::agg::Config::default();
        self.apply(&mut c);
        c
    }

    /// Overrides the fields set here in `c`.
    pub fn apply(&self, c: &mut braid_proto::agg::Config) {
        if let Some(v) = self.chunk_size {
            c.chunk_size = v.0 as usize;
        }
        if let Some(v) = self.max_chunk_size {
            c.max_chunk_size = v.0 as usize;
        }
        if let Some(v) = self.recv_window {
            c.recv_window = v.0;
        }
        if let Some(v) = self.send_buffer {
            c.send_buffer = v.0;
        }
        if let Some(v) = self.unsent_limit {
            c.unsent_limit = v.0;
        }
        if let Some(v) = self.initial_link_window {
            c.initial_link_window = v.0;
        }
        if let Some(v) = self.link_timeout_floor {
            c.link_timeout_floor = v.0;
        }
        if let Some(v) = self.link_timeout_rtts {
            c.link_timeout_rtts = v;
        }
        if let Some(v) = self.keepalive {
            c.keepalive = v.0;
        }
        if let Some(v) = self.grace {
            c.grace = v.0;
        }
        if let Some(v) = self.crc {
            c.crc = v;
        }
    }
}

/// Which way the application data flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Side A writes, side B reads.
    #[default]
    AToB,
    /// Side B writes, side A reads.
    BToA,
    /// Both at once, `size` bytes each way.
    Both,
}

/// One side of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The side that writes in `a-to-b`.
    A,
    /// The other side.
    B,
}

impl Side {
    /// 0 for A, 1 for B.
    pub const fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// The other side.
    pub const fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// The application transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSpec {
    /// Bytes to send (each way for `both`).
    pub size: ByteSize,
    /// Which way (default `a-to-b`).
    #[serde(default)]
    pub direction: Direction,
    /// Limit on how fast the reader reads (default: reads everything at once).
    #[serde(default)]
    pub read_rate: Option<BitRate>,
}

/// One `[[link]]` table: a link (or `count` identical links).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Name for events and reports (default `L<index>`, the index counting every link).
    /// With `count > 1` the links are named `name.0`, `name.1`…; an event naming the group
    /// applies to all of them.
    #[serde(default)]
    pub name: Option<String>,
    /// Rate from A to B (and from B to A unless `rate_back` is set).
    pub rate: BitRate,
    /// Rate from B to A, if different.
    #[serde(default)]
    pub rate_back: Option<BitRate>,
    /// One-way delay (both directions unless `delay_back` is set).
    pub delay: Span,
    /// One-way delay from B to A, if different.
    #[serde(default)]
    pub delay_back: Option<Span>,
    /// Random extra delay per segment, uniform in `0..=jitter` (order is kept: a link is a
    /// FIFO). Default none.
    #[serde(default)]
    pub jitter: Option<Span>,
    /// Send buffer of each direction: a writer may add bytes while fewer than this are
    /// unsent (like `TCP_NOTSENT_LOWAT`). Default 64 KiB.
    #[serde(default = "default_buffer")]
    pub buffer: ByteSize,
    /// Number of identical links (default 1).
    #[serde(default = "default_count")]
    pub count: u32,
    /// When the link joins (default at the start).
    #[serde(default)]
    pub join: Option<Span>,
}

fn default_buffer() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_count() -> u32 {
    1
}

impl LinkSpec {
    /// A symmetric link with the default buffer, joining at the start.
    pub fn new(rate: BitRate, delay: Duration) -> Self {
        LinkSpec {
            name: None,
            rate,
            rate_back: None,
            delay: Span(delay),
            delay_back: None,
            jitter: None,
            buffer: default_buffer(),
            count: 1,
            join: None,
        }
    }
}

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The link dies and both sides are told at once (EOF/error).
    LoudDeath,
    /// The link goes silent: bytes in flight and written later vanish, nobody is told.
    SilentDeath,
    /// A dead link comes back as a new link (same parameters unless given in the event).
    Return,
    /// The link's rate changes (`rate`, and `rate_back` for B to A).
    Rate,
    /// The link's one-way delay changes for bytes sent from now on (`delay`, `delay_back`).
    Delay,
    /// Side A leaves the link gracefully (`remove_link`).
    Leave,
    /// The reader (of `side`, default both) stops reading.
    StopReading,
    /// The reader (of `side`, default both) resumes reading.
    ResumeReading,
}

/// A reference to a link: its index among all links (counting each of `count`), or its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LinkRef {
    /// Index, from 0, in file order with `count` expanded.
    Index(usize),
    /// Name (or group name).
    Name(String),
}

/// One `[[event]]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// When.
    pub at: Span,
    /// What.
    pub kind: EventKind,
    /// Which link (required for link events).
    #[serde(default)]
    pub link: Option<LinkRef>,
    /// New rate (`rate`, `return`).
    #[serde(default)]
    pub rate: Option<BitRate>,
    /// New rate from B to A (default: `rate`).
    #[serde(default)]
    pub rate_back: Option<BitRate>,
    /// New delay (`delay`, `return`).
    #[serde(default)]
    pub delay: Option<Span>,
    /// New delay from B to A (default: `delay`).
    #[serde(default)]
    pub delay_back: Option<Span>,
    /// New buffer (`return`).
    #[serde(default)]
    pub buffer: Option<ByteSize>,
    /// Which reader (`stop-reading`, `resume-reading`); default both.
    #[serde(default)]
    pub side: Option<Side>,
}

impl EventSpec {
    /// An event of `kind` at `at` on `link`, with no other field set.
    pub fn new(at: Duration, kind: EventKind, link: Option<LinkRef>) -> Self {
        EventSpec {
            at: Span(at),
            kind,
            link,
            rate: None,
            rate_back: None,
            delay: None,
            delay_back: None,
            buffer: None,
            side: None,
        }
    }
}

/// A link after `count` expansion.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// Name (unique).
    pub name: String,
    /// Group name (the `[[link]]` table's name), for events naming a group.
    pub group: String,
    /// Rates A→B, B→A.
    pub rate: [BitRate; 2],
    /// Delays A→B, B→A.
    pub delay: [Duration; 2],
    /// Jitter.
    pub jitter: Duration,
    /// Send buffer per direction.
    pub buffer: u64,
    /// Join time.
    pub join: Duration,
}

impl Scenario {
    /// Parses a scenario from TOML text and checks it.
    ///
    /// # Errors
    /// [`ScenarioError::Toml`] for syntax, unknown or missing keys and bad units;
    /// [`ScenarioError::Invalid`] for values out of range.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Reads and parses a scenario file; the name defaults to the file stem.
    ///
    /// # Errors
    /// As [`Scenario::from_toml`], plus [`ScenarioError::Io`].
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut s = Self::from_toml(&text)?;
        if s.name.is_none() {
            s.name = path.file_stem().map(|n| n.to_string_lossy().into_owned());
        }
        Ok(s)
    }

    /// The name shown in reports.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("scenario")
    }

    /// The links with `count` expanded, in file order.
    pub fn links(&self) -> Vec<LinkParams> {
        let mut out = Vec::new();
        for l in &self.link {
            for k in 0..l.count {
                let index = out.len();
                let (name, group) = match &l.name {
                    None => (format!("L{index}"), format!("L{index}")),
                    Some(g) if l.count == 1 => (g.clone(), g.clone()),
                    Some(g) => (format!("{g}.{k}"), g.clone()),
                };
                out.push(LinkParams {
                    name,
                    group,
                    rate: [l.rate, l.rate_back.unwrap_or(l.rate)],
                    delay: [l.delay.0, l.delay_back.unwrap_or(l.delay).0],
                    jitter: l.jitter.map_or(Duration::ZERO, |j| j.0),
                    buffer: l.buffer.0,
                    join: l.join.map_or(Duration::ZERO, |j| j.0),
                });
            }
        }
        out
    }

    /// The expanded link indices an event refers to.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming `event[i].link` when nothing matches.
    pub fn resolve(
        &self,
        links: &[LinkParams],
        i: usize,
        r: &LinkRef,
    ) -> Result<Vec<usize>, ScenarioError> {
        let field = format!("event[{i}].link");
        match r {
            LinkRef::Index(n) if *n < links.len() => Ok(vec![*n]),
            LinkRef::Index(n) => Err(invalid(
                field,
                format!("no link {n}: there are {} links (from 0)", links.len()),
            )),
            LinkRef::Name(name) => {
                if let Some(k) = links.iter().position(|l| &l.name == name) {
                    return Ok(vec![k]);
                }
                let group: Vec<usize> = (0..links.len())
                    .filter(|&k| &links[k].group == name)
                    .collect();
                if group.is_empty() {
                    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
                    Err(invalid(
                        field,
                        format!("no link named {name:?} (links: {})", names.join(", ")),
                    ))
                } else {
                    Ok(group)
                }
            }
        }
    }

    /// Checks ranges and references.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming the first offending field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.seed.is_empty() {
            return Err(invalid("seed", "give at least one seed"));
        }
        if self.segment.0 < 64 {
            return Err(invalid("segment", "must be at least 64 bytes"));
        }
        if self.max_time.0.is_zero() {
            return Err(invalid("max_time", "must be positive"));
        }
        if self.stall_limit.0.is_zero() {
            return Err(invalid("stall_limit", "must be positive"));
        }
        for (name, e) in [
            ("engine", Some(&self.engine)),
            ("engine_b", self.engine_b.as_ref()),
        ] {
            let Some(e) = e else { continue };
            for (key, size) in [
                ("chunk_size", e.chunk_size),
                ("max_chunk_size", e.max_chunk_size),
            ] {
                if let Some(c) = size {
                    if c.0 == 0 || c.0 > braid_proto::agg::frame::MAX_CHUNK as u64 {
                        return Err(invalid(
                            format!("{name}.{key}"),
                            "must be between 1 byte and 1MiB",
                        ));
                    }
                }
            }
            if e.recv_window.is_some_and(|w| w.0 == 0) {
                return Err(invalid(format!("{name}.recv_window"), "must be positive"));
            }
            if e.send_buffer.is_some_and(|w| w.0 == 0) {
                return Err(invalid(format!("{name}.send_buffer"), "must be positive"));
            }
            if e.unsent_limit.is_some_and(|w| w.0 == 0) {
                return Err(invalid(format!("{name}.unsent_limit"), "must be positive"));
            }
        }
        if let Some(r) = self.transfer.read_rate {
            if !r.is_positive() {
                return Err(invalid("transfer.read_rate", "must be positive"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.link.iter().enumerate() {
            let f = |k: &str| format!("link[{i}].{k}");
            if !l.rate.is_positive() {
                return Err(invalid(f("rate"), "must be positive"));
            }
            if l.rate_back.is_some_and(|r| !r.is_positive()) {
                return Err(invalid(f("rate_back"), "must be positive"));
            }
            if l.buffer.0 == 0 {
                return Err(invalid(f("buffer"), "must be positive"));
            }
            if l.count == 0 {
                return Err(invalid(f("count"), "must be at least 1"));
            }
            if let Some(n) = &l.name {
                if !names.insert(n.clone()) {
                    return Err(invalid(f("name"), format!("{n:?} is used twice")));
                }
            }
        }
        let links = self.links();
        for (i, e) in self.event.iter().enumerate() {
            let f = |k: &str| format!("event[{i}].{k}");
            let link_event = !matches!(e.kind, EventKind::StopReading | EventKind::ResumeReading);
            match (&e.link, link_event) {
                (None, true) => {
                    return Err(invalid(
                        f("link"),
                        format!("a {:?} event needs `link`", e.kind),
                    ));
                }
                (Some(_), false) => {
                    return Err(invalid(f("link"), "reader events take `side`, not `link`"));
                }
                (Some(r), true) => {
                    self.resolve(&links, i, r)?;
                }
                (None, false) => {}
            }
            if e.side.is_some() && link_event {
                return Err(invalid(f("side"), "only reader events take `side`"));
            }
            let allowed_rate = matches!(e.kind, EventKind::Rate | EventKind::Return);
            let allowed_delay = matches!(e.kind, EventKind::Delay | EventKind::Return);
            if e.kind == EventKind::Rate && e.rate.is_none() {
                return Err(invalid(f("rate"), "a rate event needs `rate`"));
            }
            if e.kind == EventKind::Delay && e.delay.is_none() {
                return Err(invalid(f("delay"), "a delay event needs `delay`"));
            }
            if !allowed_rate && (e.rate.is_some() || e.rate_back.is_some()) {
                return Err(invalid(
                    f("rate"),
                    "only rate and return events take a rate",
                ));
            }
            if !allowed_delay && (e.delay.is_some() || e.delay_back.is_some()) {
                return Err(invalid(
                    f("delay"),
                    "only delay and return events take a delay",
                ));
            }
            if e.buffer.is_some() && e.kind != EventKind::Return {
                return Err(invalid(f("buffer"), "only return events take a buffer"));
            }
            for r in [e.rate, e.rate_back].into_iter().flatten() {
                if !r.is_positive() {
                    return Err(invalid(f("rate"), "must be positive"));
                }
            }
            if e.buffer.is_some_and(|b| b.0 == 0) {
                return Err(invalid(f("buffer"), "must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
        name = "three"
        seed = [1, 2]
        [transfer]
        size = "10MB"
        [[link]]
        rate = "40Mbit"
        delay = "5ms"
        [[link]]
        name = "wifi"
        rate = "20Mbit"
        delay = "15ms"
        count = 2
        [[event]]
        at = "2s"
        kind = "silent-death"
        link = "wifi.1"
        [[event]]
        at = "3s"
        kind = "rate"
        link = 0
        rate = "10Mbit"
    "#;

    #[test]
    fn parses() {
        let s = Scenario::from_toml(THREE).unwrap();
        assert_eq!(s.seed, vec![1, 2]);
        let links = s.links();
        let names: Vec<_> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["L0", "wifi.0", "wifi.1"]);
        assert_eq!(
            s.resolve(&links, 0, &LinkRef::Name("wifi".into())).unwrap(),
            vec![1, 2]
        );
        assert_eq!(links[1].rate[1], BitRate(20e6));
        assert_eq!(links[0].buffer, 64 * 1024);
    }

    #[test]
    fn errors_name_the_field() {
        let e =
            Scenario::from_toml(&THREE.replace("count = 2", "count = 2\nspeed = 3")).unwrap_err();
        assert!(e.to_string().contains("speed"), "{e}");
        let e = Scenario::from_toml(&THREE.replace("\"40Mbit\"", "\"40Mbt\"")).unwrap_err();
        assert!(e.to_string().contains("40Mbt"), "{e}");
        let e = Scenario::from_toml(&THREE.replace("\"wifi.1\"", "\"lte\"")).unwrap_err();
        assert!(e.to_string().contains("event[0].link"), "{e}");
        let e = Scenario::from_toml(&THREE.replace("rate = \"10Mbit\"", "")).unwrap_err();
        assert!(e.to_string().contains("event[1].rate"), "{e}");
    }
}
