//! Conversions for hinted handoff: a write's mode from the API, and a node's hints for
//! the Hints call.

use kv_node::{HintsStatus, InvalidRequest, TargetHints, WriteMode};
use kv_proto::kvstore as api;

/// The write mode a Put or Delete asked for; an unknown number is refused.
pub fn write_mode(raw: i32) -> Result<WriteMode, InvalidRequest> {
    match api::WriteMode::try_from(raw) {
        Ok(api::WriteMode::Default) => Ok(WriteMode::Default),
        Ok(api::WriteMode::Strict) => Ok(WriteMode::Strict),
        Ok(api::WriteMode::Sloppy) => Ok(WriteMode::Sloppy),
        Err(_) => Err(InvalidRequest::UnknownWriteMode(raw)),
    }
}

/// A node's hints as the Hints call answers them.
pub fn hints(node_id: &str, status: HintsStatus) -> api::HintsResponse {
    let HintsStatus {
        config,
        targets,
        counters,
    } = status;
    api::HintsResponse {
        node_id: node_id.to_owned(),
        enabled: config.enabled(),
        sloppy_quorum: config.sloppy_quorum,
        max_age_ms: millis(config.max_age),
        max_bytes: config.max_bytes,
        max_target_bytes: config.max_target_bytes,
        delivery_keys_per_sec: config.delivery_keys_per_sec,
        targets: targets.into_iter().map(target).collect(),
        stored_total: counters.stored,
        delivered_total: counters.delivered,
        expired_total: counters.expired,
        dropped_total: counters.dropped,
        sloppy_acks_total: counters.sloppy_acks,
    }
}

fn target(target: TargetHints) -> api::TargetHints {
    api::TargetHints {
        target: target.target,
        hints: target.hints,
        bytes: target.bytes,
        oldest_age_ms: target.oldest_age.map_or(0, millis),
        target_state: target.state.label().to_owned(),
        delivered: target.delivered,
        last_error: target.last_error,
        last_attempt_ago_ms: target.last_attempt_ago.map(millis),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_modes_map_and_unknown_ones_are_refused_by_number() {
        assert_eq!(write_mode(0).unwrap(), WriteMode::Default);
        assert_eq!(write_mode(1).unwrap(), WriteMode::Strict);
        assert_eq!(write_mode(2).unwrap(), WriteMode::Sloppy);
        let refused = write_mode(7).unwrap_err().to_string();
        assert!(refused.contains("write_mode 7"), "{refused}");
    }
}
