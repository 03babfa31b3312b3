//! Causality tracking for replicated key-value stores: dots, version vectors and the
//! dotted version vector set (DVVSet) of Almeida et al. (2014).
//!
//! A replica stores a [`DvvSet`] per key: the live sibling values, each tagged with the
//! [`Dot`] of the write that created it, plus one compact causal history. Coordinators
//! [`DvvSet::update`] it with the context a client read; replicas [`DvvSet::sync`] each
//! other's sets. Unlike vector clocks keyed by the coordinator, a DVVSet never loses one
//! of two concurrent writes that reach the same coordinator, and never keeps a value a
//! later write saw (no "sibling explosion").
//!
//! ```
//! use kv_clock::{ActorId, Causality, DvvSet, VersionVector};
//! let (x, y) = (ActorId::new("x").unwrap(), ActorId::new("y").unwrap());
//! let mut replica_x = DvvSet::new();
//! let mut replica_y = DvvSet::new();
//! replica_x.update(&VersionVector::new(), "from x", &x);
//! replica_y.update(&VersionVector::new(), "from y", &y);
//! assert_eq!(replica_x.compare(&replica_y), Causality::Concurrent);
//! replica_x.sync(&replica_y);
//! assert_eq!(replica_x.sibling_count(), 2);
//! ```
//!
//! Clocks encode to a compact, versioned binary form ([`encode_dvvset`],
//! [`decode_dvvset`]) whose decoder rejects malformed input with a [`DecodeError`].
//! Nothing in this crate does I/O.

#![warn(missing_docs)]

mod actor;
mod codec;
mod dvvset;
mod error;
mod version_vector;

pub use actor::{ActorId, MAX_ACTOR_ID_BYTES};
pub use codec::{
    FORMAT_VERSION, ValueCodec, decode_dvvset, decode_version_vector, encode_dvvset,
    encode_version_vector,
};
pub use dvvset::DvvSet;
pub use error::{ClockError, DecodeError};
pub use version_vector::{Causality, Dot, VersionVector};
