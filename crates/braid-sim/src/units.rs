//! Human units for scenario files: `"40Mbit"`, `"5ms"`, `"64KiB"`, `"100MB"`.
//!
//! Each type parses from a string (and sizes also from a plain integer of bytes) and prints
//! back in the same notation, so a scenario round-trips through serde.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a number followed by a known unit.
    #[error("invalid {kind} {input:?}: expected e.g. {example}")]
    Invalid {
        /// What was being parsed ("size", "rate", "duration").
        kind: &'static str,
        /// The text given.
        input: String,
        /// An example of valid input.
        example: &'static str,
    },
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let number: String = s[..end].chars().filter(|&c| c != '_').collect();
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value, s[end..].trim()))
}

/// A number of bytes: `"64KiB"`, `"100MB"` (SI, 10^6), `"1GiB"`, `"1500"`, or an integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || UnitError::Invalid {
            kind: "size",
            input: s.to_string(),
            example: "\"64KiB\", \"100MB\", \"1GiB\" or 1500",
        };
        let (value, unit) = split_number(s).ok_or_else(err)?;
        let factor: f64 = match unit {
            "" | "B" => 1.0,
            "k" | "kB" | "KB" => 1e3,
            "M" | "MB" => 1e6,
            "G" | "GB" => 1e9,
            "T" | "TB" => 1e12,
            "Ki" | "KiB" => 1024.0,
            "Mi" | "MiB" => 1024.0 * 1024.0,
            "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
            "Ti" | "TiB" => 1024.0f64.powi(4),
            _ => return Err(err()),
        };
        let bytes = (value * factor).round();
        if bytes > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        const SI: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "kB")];
        for (size, name) in UNITS.iter().chain(SI.iter()) {
            if b >= *size && b % size == 0 {
                return write!(f, "{}{}", b / size, name);
            }
        }
        write!(f, "{b}B")
    }
}

/// A bit rate in bits per second: `"40Mbit"`, `"40Mbit/s"`, `"2.5Gbps"`, `"500kbit"`,
/// `"10MB/s"` (bytes per second), `"1MiB/s"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct BitRate(pub f64);

impl BitRate {
    /// Bits per second.
    pub const fn bits_per_sec(self) -> f64 {
        self.0
    }

    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 / 8.0
    }

    /// Whether the rate is a positive finite number.
    pub fn is_positive(self) -> bool {
        self.0.is_finite() && self.0 > 0.0
    }

    /// A rate of `mbit` megabits (10^6 bits) per second.
    pub fn mbit(mbit: f64) -> Self {
        BitRate(mbit * 1e6)
    }
}

impl FromStr for BitRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || UnitError::Invalid {
            kind: "rate",
            input: s.to_string(),
            example: "\"40Mbit\", \"2.5Gbit/s\", \"500kbps\" or \"10MB/s\"",
        };
        let (value, unit) = split_number(s).ok_or_else(err)?;
        let unit = unit.strip_suffix("/s").unwrap_or(unit);
        let (prefix, bits_per_unit) = if let Some(p) = unit.strip_suffix("bit") {
            (p, 1.0)
        } else if let Some(p) = unit.strip_suffix("bps") {
            (p, 1.0)
        } else if let Some(p) = unit.strip_suffix('B') {
            (p, 8.0)
        } else {
            return Err(err());
        };
        let factor = match prefix {
            "" => 1.0,
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(err()),
        };
        Ok(BitRate(value * factor * bits_per_unit))
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1e9 && (b / 1e9).fract() == 0.0 {
            write!(f, "{}Gbit", b / 1e9)
        } else if b >= 1e6 {
            write!(f, "{}Mbit", b / 1e6)
        } else if b >= 1e3 {
            write!(f, "{}kbit", b / 1e3)
        } else {
            write!(f, "{b}bit")
        }
    }
}

/// A span of time: `"5ms"`, `"2s"`, `"1m 30s"`, `"250us"` (humantime syntax).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    /// The duration.
    pub const fn duration(self) -> Duration {
        self.0
    }

    /// `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Span(Duration::from_millis(ms))
    }

    /// `s` seconds.
    pub const fn secs(s: u64) -> Self {
        Span(Duration::from_secs(s))
    }
}

impl FromStr for Span {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let s = s.trim();
        if s == "0" {
            return Ok(Span(Duration::ZERO));
        }
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|_| UnitError::Invalid {
                kind: "duration",
                input: s.to_string(),
                example: "\"5ms\", \"2s\", \"1m 30s\" or \"250us\"",
            })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

macro_rules! string_serde {
    ($ty:ty, $expecting:literal, $allow_int:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        if $allow_int {
                            v.to_string().parse().map_err(E::custom)
                        } else {
                            Err(E::custom(format!(
                                concat!("a bare number ({}) needs a unit: ", $expecting),
                                v
                            )))
                        }
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        if v < 0 {
                            return Err(E::custom("must not be negative"));
                        }
                        self.visit_u64(v as u64)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_serde!(ByteSize, "a size such as \"64KiB\" or \"100MB\"", true);
string_serde!(BitRate, "a rate such as \"40Mbit\"", false);
string_serde!(Span, "a duration such as \"5ms\" or \"2s\"", false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64KiB".parse::<ByteSize>().unwrap(), ByteSize(65536));
        assert_eq!("100MB".parse::<ByteSize>().unwrap(), ByteSize(100_000_000));
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("1500".parse::<ByteSize>().unwrap(), ByteSize(1500));
        assert_eq!("1.5 MB".parse::<ByteSize>().unwrap(), ByteSize(1_500_000));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(65536).to_string(), "64KiB");
        assert_eq!(ByteSize(100_000_000).to_string(), "100MB");
    }

    #[test]
    fn rates() {
        assert_eq!("40Mbit".parse::<BitRate>().unwrap(), BitRate(40e6));
        assert_eq!("40Mbit/s".parse::<BitRate>().unwrap(), BitRate(40e6));
        assert_eq!("2.5Gbps".parse::<BitRate>().unwrap(), BitRate(2.5e9));
        assert_eq!("500kbit".parse::<BitRate>().unwrap(), BitRate(5e5));
        assert_eq!("10MB/s".parse::<BitRate>().unwrap(), BitRate(80e6));
        assert!("40Mbt".parse::<BitRate>().is_err());
        assert_eq!(BitRate(40e6).to_string(), "40Mbit");
        assert_eq!(BitRate(2.5e6).to_string(), "2.5Mbit");
    }

    #[test]
    fn spans() {
        assert_eq!("5ms".parse::<Span>().unwrap(), Span::millis(5));
        assert_eq!("2s".parse::<Span>().unwrap(), Span::secs(2));
        assert_eq!("0".parse::<Span>().unwrap(), Span::secs(0));
        assert!("5 lightyears".parse::<Span>().is_err());
        assert_eq!(Span::millis(150).to_string(), "150ms");
    }
}
