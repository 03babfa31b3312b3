//! Conversions between kv-clock types and the API's messages.

use kv_clock::{Dot, VersionVector};
use kv_proto::kvstore as api;
use kv_storage::Siblings;

pub(crate) fn version_to_api(version: &VersionVector) -> api::Version {
    api::Version {
        entries: version
            .iter()
            .map(|(actor, counter)| api::VersionEntry {
                node_id: actor.to_string(),
                counter,
            })
            .collect(),
    }
}

fn dot_to_api(dot: &Dot) -> api::Version {
    api::Version {
        entries: vec![api::VersionEntry {
            node_id: dot.actor.to_string(),
            counter: dot.counter,
        }],
    }
}

/// Builds a Get answer. Tombstones are hidden when live values exist (the context still
/// covers them, so the next write with it clears them); a key whose versions are all
/// tombstones, or that was never written, is NOT_FOUND.
pub(crate) fn get_response(merged: Option<&Siblings>) -> api::GetResponse {
    let Some(merged) = merged else {
        return api::GetResponse {
            status: api::Status::NotFound.into(),
            ..api::GetResponse::default()
        };
    };
    let context = merged.join();
    let live: Vec<(Dot, &bytes::Bytes)> = merged
        .siblings()
        .filter_map(|(dot, value)| value.as_ref().map(|v| (dot, v)))
        .collect();
    let mut response = api::GetResponse {
        status: api::Status::Success.into(),
        context: Some(version_to_api(&context)),
        ..api::GetResponse::default()
    };
    match live.as_slice() {
        [] => response.status = api::Status::NotFound.into(),
        [(_, value)] => {
            response.value = Some(api::VersionedValue {
                value: (*value).clone(),
                version: Some(version_to_api(&context)),
                deleted: false,
            });
        }
        siblings => {
            response.conflicts = siblings
                .iter()
                .map(|(dot, value)| api::VersionedValue {
                    value: (*value).clone(),
                    version: Some(dot_to_api(dot)),
                    deleted: false,
                })
                .collect();
        }
    }
    response
}
