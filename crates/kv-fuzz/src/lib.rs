//! What kvstore's fuzz targets check, kept in the workspace so that the committed corpora
//! also run as ordinary tests (`tests/corpus.rs`) and the checks build with everything
//! else. Each [`Target`] is a decoder of bytes that come from the network or the disk;
//! [`check`] feeds it arbitrary input and panics only when an invariant breaks (a decoder
//! that accepts input must re-encode it to something it decodes to the same encoding).
//! Errors are the expected answer to garbage; a panic, a hang or an abort is a bug.
//!
//! The libFuzzer harnesses live in `fuzz/` (run them with `cargo xtask fuzz`); each is one
//! line calling [`check`]. [`seeds`] makes their starting corpora with the real encoders.

#![warn(missing_docs)]

use bytes::Bytes;
use kv_clock::{ActorId, DvvSet, VersionVector, decode_dvvset, decode_version_vector};
use kv_gossip::{Gossip, GossipConfig, Keyring, NodeIdentity, Sealer};
use kv_proto::internal as proto;
use kv_storage::Siblings;
use kv_storage::disk_format;
use prost::Message;

/// A decoder under fuzzing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// kv-clock's DVV set and version vector codec (replica values, contexts).
    DvvCodec,
    /// A data record and a hint record as the persistent store reads them back.
    StoredRecord,
    /// Node-to-node gRPC messages: batches of replica writes and hints, coordinated
    /// writes, digest and key-list requests and answers.
    InternalWire,
    /// A gossip datagram: unsealed, and through a keyring.
    GossipPacket,
    /// A ring layout as nodes exchange it (ring sync).
    LayoutFrame,
    /// An anti-entropy digest tree.
    AaeTree,
}

impl Target {
    /// Every target.
    pub const ALL: [Self; 6] = [
        Self::DvvCodec,
        Self::StoredRecord,
        Self::InternalWire,
        Self::GossipPacket,
        Self::LayoutFrame,
        Self::AaeTree,
    ];

    /// The name of its fuzz target and corpus directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::DvvCodec => "dvv_codec",
            Self::StoredRecord => "stored_record",
            Self::InternalWire => "internal_wire",
            Self::GossipPacket => "gossip_packet",
            Self::LayoutFrame => "layout_frame",
            Self::AaeTree => "aae_tree",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Runs `target`'s decoder on `data`; panics if an invariant breaks.
pub fn check(target: Target, data: &[u8]) {
    match target {
        Target::DvvCodec => dvv_codec(data),
        Target::StoredRecord => stored_record(data),
        Target::InternalWire => internal_wire(data),
        Target::GossipPacket => gossip_packet(data),
        Target::LayoutFrame => layout_frame(data),
        Target::AaeTree => aae_tree(data),
    }
}

fn encode_siblings(set: &Siblings) -> Vec<u8> {
    let mut out = Vec::new();
    kv_clock::encode_dvvset(set, &mut out);
    out
}

fn dvv_codec(data: &[u8]) {
    if let Ok(set) = decode_dvvset::<Option<Bytes>>(data) {
        let encoded = encode_siblings(&set);
        let again = decode_dvvset::<Option<Bytes>>(&encoded).expect("a re-encoded set decodes");
        assert_eq!(encode_siblings(&again), encoded, "the codec is not stable");
        assert_eq!(again.sibling_count(), set.sibling_count());
    }
    if let Ok(vv) = decode_version_vector(data) {
        let mut encoded = Vec::new();
        kv_clock::encode_version_vector(&vv, &mut encoded);
        let again = decode_version_vector(&encoded).expect("a re-encoded vector decodes");
        assert_eq!(again, vv);
    }
}

fn stored_record(data: &[u8]) {
    let _ = disk_format::decode_record(b"key", data);
    // Garbage rarely passes the checksum: also wrap the input as a record whose checksum
    // holds, so the payload decoder is reached.
    if let Ok(set) = decode_dvvset::<Option<Bytes>>(data) {
        let record = disk_format::encode_record(&set);
        let read = disk_format::decode_record(b"key", &record).expect("a written record reads");
        assert_eq!(encode_siblings(&read), encode_siblings(&set));
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (raw_key, raw_value) = data.split_at(split);
    let _ = disk_format::decode_hint(raw_key, raw_value);
}

fn internal_wire(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Ok(batch) = proto::BatchRequest::decode(body)
                && kv_grpc::wire::check_batch(&batch).is_ok()
            {
                for item in batch.items {
                    let siblings = match item.op {
                        Some(proto::batch_item::Op::Write(write)) => write.siblings,
                        Some(proto::batch_item::Op::Hint(hint)) => hint.siblings,
                        _ => continue,
                    };
                    let _ = kv_grpc::wire::decode_siblings(&siblings);
                }
            }
        }
        1 => {
            if let Ok(request) = proto::CoordinateWriteRequest::decode(body) {
                let _ = kv_grpc::wire::decode_coordinate_request(request);
            }
        }
        2 => {
            if let Ok(request) = proto::DigestsRequest::decode(body) {
                let _ = kv_grpc::wire::decode_digests_request(&request);
            }
        }
        3 => {
            if let Ok(request) = proto::KeyListRequest::decode(body) {
                let _ = kv_grpc::wire::decode_key_list_request(&request);
            }
        }
        4 => {
            if let Ok(reply) = proto::ReadResponse::decode(body) {
                let _ = kv_grpc::wire::decode_read_response(&reply);
            }
        }
        _ => {
            let _ = kv_grpc::wire::decode_context(body);
            let _ = kv_grpc::wire::decode_siblings(body);
        }
    }
}

const FUZZ_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The receiver's clock in the gossip target: what seeds are stamped with.
const FUZZ_NOW_MS: u64 = 1_800_000_000_000;

fn identity(i: u16) -> NodeIdentity {
    NodeIdentity {
        node_id: format!("n{i}"),
        gossip_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7945 + i)),
        internal_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 50150 + i)),
        client_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 50050 + i)),
        bump: 1,
    }
}

fn gossip_packet(data: &[u8]) {
    let mut gossip = Gossip::new(identity(1), GossipConfig::lan(), 7).expect("valid config");
    gossip.handle_datagram(data, std::time::Duration::from_secs(1));
    let _ = gossip.take_outgoing().count();
    let keyring = Keyring::parse(FUZZ_KEY).expect("a valid key");
    let mut sealer = Sealer::new(keyring, [1; 16]);
    if let Ok(payload) = sealer.open(data, FUZZ_NOW_MS) {
        gossip.handle_datagram(&payload, std::time::Duration::from_secs(2));
    }
}

fn layout_frame(data: &[u8]) {
    if let Ok(layout) = kv_layout::decode_layout(data) {
        let encoded = kv_layout::encode_layout(&layout);
        let again = kv_layout::decode_layout(&encoded).expect("a re-encoded layout decodes");
        assert_eq!(kv_layout::encode_layout(&again), encoded);
    }
}

fn aae_tree(data: &[u8]) {
    if let Ok(tree) = kv_aae::decode_tree(data) {
        let encoded = kv_aae::encode_tree(&tree);
        let again = kv_aae::decode_tree(&encoded).expect("a re-encoded tree decodes");
        assert_eq!(again.root(), tree.root());
    }
}

/// Valid inputs for every target, made with the real encoders: (target, name, bytes).
pub fn seeds() -> Vec<(Target, &'static str, Vec<u8>)> {
    let siblings = sample_siblings();
    let encoded = encode_siblings(&siblings);
    let mut seeds = vec![
        (Target::DvvCodec, "two-siblings", encoded.clone()),
        (Target::DvvCodec, "context", context_bytes()),
        (Target::StoredRecord, "payload", encoded.clone()),
        (
            Target::StoredRecord,
            "record",
            disk_format::encode_record(&siblings),
        ),
    ];
    let (raw_key, raw_value) =
        disk_format::encode_hint("n2", b"user:1", &siblings, FUZZ_NOW_MS).expect("a hint");
    let mut hint = vec![raw_key.len() as u8];
    hint.extend(raw_key);
    hint.extend(raw_value);
    seeds.push((Target::StoredRecord, "hint", hint));
    seeds.extend(wire_seeds(&siblings));
    seeds.extend(gossip_seeds());
    let layout = kv_layout::Layout::found(42, 3, "n1", 16);
    seeds.push((
        Target::LayoutFrame,
        "founded",
        kv_layout::encode_layout(&layout),
    ));
    // A small geometry: the current one encodes to 1 MiB, far beyond a useful input.
    let small = kv_aae::TreeFormat {
        partition_bits: 2,
        leaf_bits: 2,
        ..kv_aae::TreeFormat::CURRENT
    };
    let mut tree = kv_aae::DigestTree::new(small);
    for position in [1_u64, 1 << 40, u64::MAX - 7] {
        tree.insert(position, position.rotate_left(17));
    }
    seeds.push((Target::AaeTree, "three-items", kv_aae::encode_tree(&tree)));
    seeds
}

fn sample_siblings() -> Siblings {
    let (a, b) = (
        ActorId::new("n1").expect("id"),
        ActorId::new("n2").expect("id"),
    );
    let mut set = DvvSet::new();
    set.update(&VersionVector::new(), Some(Bytes::from_static(b"ada")), &a);
    set.update(
        &VersionVector::new(),
        Some(Bytes::from_static(b"grace")),
        &b,
    );
    set.update(&set.join(), None, &a);
    set.update(&VersionVector::new(), Some(Bytes::from_static(b"late")), &b);
    set
}

fn context_bytes() -> Vec<u8> {
    let vv = sample_siblings().join();
    let mut out = Vec::new();
    kv_clock::encode_version_vector(&vv, &mut out);
    out
}

fn tagged(kind: u8, message: &impl Message) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(message.encode_to_vec());
    out
}

fn wire_seeds(siblings: &Siblings) -> Vec<(Target, &'static str, Vec<u8>)> {
    let key = Bytes::from_static(b"user:1");
    let batch = proto::BatchRequest {
        items: vec![
            kv_grpc::wire::read_item(key.clone(), "r1"),
            kv_grpc::wire::write_item(key.clone(), siblings, "r2"),
        ],
    };
    let read = kv_grpc::wire::read_response(Some(siblings));
    let range = kv_aae::HashRange::new(0, u64::MAX / 2).expect("first <= last");
    let digests = kv_grpc::wire::digests_request("n1", &[range]);
    let mut context = vec![5];
    context.extend(context_bytes());
    vec![
        (Target::InternalWire, "batch", tagged(0, &batch)),
        (Target::InternalWire, "digests", tagged(2, &digests)),
        (Target::InternalWire, "read-response", tagged(4, &read)),
        (Target::InternalWire, "context", context),
    ]
}

fn gossip_seeds() -> Vec<(Target, &'static str, Vec<u8>)> {
    let mut a = Gossip::new(identity(1), GossipConfig::lan(), 1).expect("valid config");
    let mut b = Gossip::new(identity(2), GossipConfig::lan(), 2).expect("valid config");
    b.announce(a.identity().gossip_addr, std::time::Duration::ZERO);
    let announce = b.take_outgoing().next().map(|(_, data)| data.to_vec());
    let Some(announce) = announce else {
        return Vec::new();
    };
    a.handle_datagram(&announce, std::time::Duration::ZERO);
    let reply = a
        .take_outgoing()
        .next()
        .map_or_else(Vec::new, |(_, data)| data.to_vec());
    let keyring = Keyring::parse(FUZZ_KEY).expect("a valid key");
    let sealed = Sealer::new(keyring, [2; 16]).seal(&announce, FUZZ_NOW_MS);
    vec![
        (Target::GossipPacket, "announce", announce),
        (Target::GossipPacket, "feed", reply),
        (Target::GossipPacket, "sealed-announce", sealed),
    ]
}
