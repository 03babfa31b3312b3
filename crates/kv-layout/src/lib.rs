//! A replicated store's ring history, in sans-IO form.
//!
//! The ring is a history of numbered versions ([`RingVersion`]: a whole member set), each
//! made by an explicit change ([`Proposal`]: join, leave, remove, replace) from the one
//! before. While more than one version is live, writes go to the preference lists of
//! every live version; a node acks a version once it writes with it, and marks it synced
//! once it copied every range it gained in it ([`plan`]) from the older versions' owners;
//! reads use the newest version complete for their key; a node read-acks a version once
//! it saw all its members synced; a version retires once every member of the newest
//! version read-acked past it. A [`Layout`] holds all of this and merges
//! with any other node's like a CRDT, so nodes converge however layouts travel.
//!
//! The design follows Garage's layout history (versions with ack and sync trackers) more
//! than Cassandra's pending ranges: whole versions are simple to reason about, merge
//! without coordination, and tell every node the same thing about which version a read
//! may use.
//!
//! ```
//! use kv_layout::{Layout, Proposal};
//!
//! let mut layout = Layout::found(7, 3, "n1", 256);
//! let v2 = layout.propose(&Proposal::Join(vec![("n2".into(), 256), ("n3".into(), 256)])).unwrap();
//! assert_eq!((v2, layout.live().count()), (2, 2));
//! // Every node acks v2, then the newcomers copy what they gained and say so.
//! for node in ["n1", "n2", "n3"] {
//!     layout.ack(node, v2);
//! }
//! assert!(layout.acked_by_all(v2, |_| false));
//! for node in ["n1", "n2", "n3"] {
//!     layout.mark_synced(node, v2);
//! }
//! assert_eq!(layout.readable(), v2);
//! for node in ["n1", "n2", "n3"] {
//!     layout.mark_read(node, v2);
//! }
//! assert_eq!(layout.live().count(), 1, "v1 retired");
//! assert_eq!(layout.newest().members.len(), 3);
//! ```

#![warn(missing_docs)]

mod codec;
mod layout;
mod plan;
mod version;

pub use codec::{LayoutDecodeError, decode_layout, encode_layout};
pub use layout::{Layout, LayoutError, MAX_LIVE_VERSIONS, Mark, Proposal};
pub use plan::{Move, plan, share};
pub use version::{Change, RingVersion};
