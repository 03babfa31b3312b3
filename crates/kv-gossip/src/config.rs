//! Failure-detector tuning.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use thiserror::Error;

/// Failure-detector timings or sizes that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GossipConfigError {
    /// The probe RTT is zero or not below the probe period.
    #[error("probe RTT ({rtt_ms} ms) must be non-zero and below the probe period ({period_ms} ms)")]
    ProbeRtt {
        /// The probe RTT.
        rtt_ms: u128,
        /// The probe period.
        period_ms: u128,
    },
    /// The suspect-to-down timeout is zero.
    #[error("suspect-to-down timeout must be non-zero")]
    SuspectTimeout,
    /// Members would announce themselves more often than they probe.
    #[error(
        "announce period ({announce_ms} ms) must be at least the probe period ({period_ms} ms)"
    )]
    AnnouncePeriod {
        /// The announce period.
        announce_ms: u128,
        /// The probe period.
        period_ms: u128,
    },
    /// The packet size limit is outside what UDP and foca allow.
    #[error("max packet size {0} bytes is outside 512..=65000")]
    PacketSize(usize),
}

/// How fast members are probed and declared down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// How often each member probes a random other member.
    pub probe_period: Duration,
    /// How long a direct probe may take before indirect probes are sent.
    pub probe_rtt: Duration,
    /// How long a SUSPECT member has to refute the suspicion before it is DEAD.
    pub suspect_to_down: Duration,
    /// How long a DEAD member is remembered.
    pub remove_down_after: Duration,
    /// Largest datagram sent or accepted.
    pub max_packet_bytes: usize,
    /// How often a member announces itself to a random other member, whose answer feeds
    /// it as many members as fit in a datagram. A member that joined after others'
    /// updates stopped travelling learns them this way (or when they probe it), so this
    /// sets how fast full views form in a large cluster (see SCALING.md).
    pub announce_period: Duration,
}

impl GossipConfig {
    /// LAN defaults: a killed node turns SUSPECT within about two probe periods and DEAD
    /// `suspect_to_down` later (about 6 s in total on a 3-node cluster).
    pub fn lan() -> Self {
        Self {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(300),
            suspect_to_down: Duration::from_secs(3),
            remove_down_after: Duration::from_secs(24 * 3600),
            max_packet_bytes: 1400,
            announce_period: Duration::from_secs(10),
        }
    }

    /// Checks the timing relations foca requires.
    pub fn validate(&self) -> Result<(), GossipConfigError> {
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return Err(GossipConfigError::ProbeRtt {
                rtt_ms: self.probe_rtt.as_millis(),
                period_ms: self.probe_period.as_millis(),
            });
        }
        if self.suspect_to_down.is_zero() {
            return Err(GossipConfigError::SuspectTimeout);
        }
        if !(512..=65_000).contains(&self.max_packet_bytes) {
            return Err(GossipConfigError::PacketSize(self.max_packet_bytes));
        }
        if self.announce_period < self.probe_period {
            return Err(GossipConfigError::AnnouncePeriod {
                announce_ms: self.announce_period.as_millis(),
                period_ms: self.probe_period.as_millis(),
            });
        }
        Ok(())
    }

    pub(crate) fn to_foca(&self) -> foca::Config {
        let mut config = foca::Config::simple();
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.num_indirect_probes = NonZeroUsize::new(3).expect("non-zero");
        config.max_transmissions = NonZeroU8::new(10).expect("non-zero");
        config.suspect_to_down_after = self.suspect_to_down;
        config.remove_down_after = Some(self.remove_down_after);
        // One byte of every datagram is the frame tag that sets foca's packets apart from
        // ring-sync messages.
        config.max_packet_size = NonZeroUsize::new(self.max_packet_bytes - 1).expect("validated");
        config.notify_down_members = true;
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_period,
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        });
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::new(3).expect("non-zero"),
        });
        config
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self::lan()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_settings_are_valid_and_an_announce_faster_than_probing_is_refused() {
        assert_eq!(GossipConfig::lan().validate(), Ok(()));
        let hasty = GossipConfig {
            announce_period: Duration::from_millis(500),
            ..GossipConfig::lan()
        };
        let refused = hasty.validate().unwrap_err().to_string();
        assert!(refused.contains("announce period (500 ms)"), "{refused}");
    }
}
