//! A deterministic, seedable, virtual-time network simulator for braid's aggregation engine.
#![warn(missing_docs)]
