//! SWIM membership for kvstore, on the `foca` crate, in sans-IO form.
//!
//! [`Gossip`] is a plain struct: feed it received datagrams ([`Gossip::handle_datagram`])
//! and the current time ([`Gossip::advance`]); take the datagrams to send
//! ([`Gossip::take_outgoing`]) and the membership events ([`Gossip::take_events`]).
//! Timers are kept in one ordered heap, as foca requires. Sockets and clocks belong to the
//! caller, so a whole cluster can be simulated from one seed.
//!
//! [`seal`] protects datagrams on the wire: a [`Sealer`] seals what `take_outgoing`
//! yields and opens what arrives, under a rotatable [`Keyring`], before `handle_datagram`.
//!
//! Identities carry the node id, its gossip, internal and client addresses and a `bump`:
//! a restarted node uses a higher bump and wins the address conflict, so peers see it
//! ALIVE again at once.
//! Members are ALIVE, SUSPECT (read from foca's state; foca has no event for it) or DEAD.
//! Liveness only: who is in the ring is the business of the ring's own history
//! (`kv-layout`), which nodes exchange over their RPC channel. A DEAD member stays in the
//! ring until an operator removes it.
//!
//! ```
//! use std::time::Duration;
//! use kv_gossip::{Gossip, GossipConfig, NodeIdentity};
//!
//! let identity = |i: u16| NodeIdentity {
//!     node_id: format!("n{i}"),
//!     gossip_addr: format!("127.0.0.1:{}", 7945 + i).parse().unwrap(),
//!     internal_addr: format!("127.0.0.1:{}", 50150 + i).parse().unwrap(),
//!     client_addr: format!("127.0.0.1:{}", 50050 + i).parse().unwrap(),
//!     bump: 1,
//! };
//! let mut a = Gossip::new(identity(1), GossipConfig::lan(), 1).unwrap();
//! let mut b = Gossip::new(identity(2), GossipConfig::lan(), 2).unwrap();
//! b.announce(a.identity().gossip_addr, Duration::ZERO);
//! // Deliver datagrams by hand until both sides are quiet.
//! for _ in 0..10 {
//!     let to_a: Vec<_> = b.take_outgoing().collect();
//!     let to_b: Vec<_> = a.take_outgoing().collect();
//!     for (_, data) in to_a { a.handle_datagram(&data, Duration::ZERO); }
//!     for (_, data) in to_b { b.handle_datagram(&data, Duration::ZERO); }
//! }
//! assert_eq!(a.members().count(), 1);
//! assert_eq!(b.members().next().unwrap().identity.node_id, "n1");
//! ```

#![warn(missing_docs)]

mod config;
mod gossip;
mod identity;
mod members;
pub mod seal;

pub use config::{GossipConfig, GossipConfigError};
pub use gossip::{Gossip, GossipEvent, GossipStats, MAX_EVENTS, MAX_OUTGOING};
pub use identity::NodeIdentity;
pub use members::{MemberState, MemberView};
pub use seal::{Keyring, KeyringError, OpenError, Sealer};
