//! Quorum coordination for replicated requests.
//!
//! [`QuorumTracker`] is the decision logic alone (no I/O, no clock): feed it each
//! replica's success or failure and it says whether the quorum is reached, still
//! pending, or impossible. [`Fanout`] drives real calls: it polls one call per replica in
//! the caller's task, returns as soon as the tracker decides or a deadline passes, and
//! keeps the remaining calls so [`Fanout::finish`] can collect their late replies (for
//! read repair, or to let slow replicas finish a write).
//!
//! ```
//! use kv_quorum::{Progress, QuorumTracker};
//! let mut quorum = QuorumTracker::new(2, 3).unwrap();
//! assert_eq!(quorum.record_failure(), Progress::Pending);
//! assert_eq!(quorum.record_success(), Progress::Pending);
//! assert_eq!(quorum.record_success(), Progress::Reached);
//! ```

#![warn(missing_docs)]

mod fanout;
mod groups;
mod tracker;

pub use fanout::{Fanout, Outcome, Reply};
pub use groups::GroupQuorum;
pub use tracker::{Progress, QuorumError, QuorumTracker};
