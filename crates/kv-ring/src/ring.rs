//! The ring itself: sorted tokens, a bucket index for O(1) lookups, and a precomputed
//! preference list per token so a lookup copies nothing and allocates nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::{RingError, key_hash, token_hash};

/// Most replicas a preference list may hold (the largest supported N).
pub const MAX_REPLICAS: usize = 16;
/// Most virtual nodes one member may place.
pub const MAX_VNODES: u32 = 4096;
/// Most physical members a ring may hold.
pub const MAX_MEMBERS: usize = 1024;
/// Default virtual nodes per member.
pub const DEFAULT_VNODES: u32 = 256;

/// A physical node and how many tokens (virtual nodes) it places on the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Stable node id, e.g. `"n1"`.
    pub id: String,
    /// Number of virtual nodes; more vnodes take a proportionally larger share.
    pub vnodes: u32,
}

impl Member {
    /// A member with [`DEFAULT_VNODES`] virtual nodes.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            vnodes: DEFAULT_VNODES,
        }
    }

    /// A member with an explicit vnode count.
    pub fn with_vnodes(id: impl Into<String>, vnodes: u32) -> Self {
        Self {
            id: id.into(),
            vnodes,
        }
    }
}

/// One node's share of the key space.
#[derive(Debug, Clone, PartialEq)]
pub struct Ownership {
    /// The node id.
    pub node: String,
    /// Its vnode count.
    pub vnodes: u32,
    /// Fraction of the ring for which it is the first (primary) replica; sums to 1.
    pub primary_share: f64,
    /// Fraction of the ring for which it is any of the N replicas; sums to N.
    pub replica_share: f64,
}

/// A consistent-hash ring: a pure function of its member set and replication factor.
///
/// ```
/// use kv_ring::{Member, Ring};
/// let ring = Ring::new(["n1", "n2", "n3", "n4"].map(Member::new), 3).unwrap();
/// let replicas: Vec<&str> = ring.preference_list(b"user:123").iter().collect();
/// assert_eq!(replicas.len(), 3);
/// assert_eq!(replicas[0], ring.owner(b"user:123").unwrap());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    /// Physical node ids, sorted; a node's index here is its `u16` handle (at most
    /// MAX_MEMBERS = 1024). Shared, so callers can keep a replica's name without copying.
    nodes: Vec<Arc<str>>,
    vnodes: Vec<u32>,
    /// Sorted token positions and, in parallel, the node index owning each.
    tokens: Vec<u64>,
    owners: Vec<u16>,
    /// Replicas per preference list: `min(N, nodes.len())`.
    replicas: usize,
    /// `tokens.len() * replicas` node indices: the preference list starting at each token.
    preferences: Vec<u16>,
    /// One entry per bucket of hash space (the top bits of a hash). A bucket without a
    /// token maps every hash in it to the same successor token: the entry is that token's
    /// row in `preferences` (already wrapped), so the lookup reads no token at all. A
    /// bucket holding a token has [`BUCKET_HOLDS_TOKEN`] set beside the index of its first
    /// token, from which the lookup compares.
    buckets: Vec<u32>,
    bucket_shift: u32,
}

impl Ring {
    /// Builds the ring for `members` with replication factor `replicas` (N).
    ///
    /// The result does not depend on the order of `members`.
    pub fn new(
        members: impl IntoIterator<Item = Member>,
        replicas: usize,
    ) -> Result<Self, RingError> {
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(RingError::BadReplicationFactor {
                replicas,
                max: MAX_REPLICAS,
            });
        }
        let sorted = validate_members(members)?;
        let nodes: Vec<Arc<str>> = sorted.keys().map(|id| Arc::from(id.as_str())).collect();
        let vnodes: Vec<u32> = sorted.values().copied().collect();
        let (tokens, owners) = place_tokens(&nodes, &vnodes);
        let replicas = replicas.min(nodes.len());
        let preferences = preference_table(&owners, nodes.len(), replicas);
        let (buckets, bucket_shift) = bucket_index(&tokens, replicas);
        Ok(Self {
            nodes,
            vnodes,
            tokens,
            owners,
            replicas,
            preferences,
            buckets,
            bucket_shift,
        })
    }

    /// The N replicas for `key`, primary first. Empty only when the ring has no members.
    #[inline]
    pub fn preference_list(&self, key: &[u8]) -> PreferenceList<'_> {
        self.preference_list_for_hash(key_hash(key))
    }

    /// The N replicas for a ring position (see [`key_hash`](crate::key_hash)).
    #[inline]
    pub fn preference_list_for_hash(&self, hash: u64) -> PreferenceList<'_> {
        if self.tokens.is_empty() {
            return PreferenceList {
                ring: self,
                slots: &[],
            };
        }
        let entry = self.buckets[(hash >> self.bucket_shift) as usize];
        let start = if entry & BUCKET_HOLDS_TOKEN == 0 {
            entry as usize
        } else {
            self.scan_tokens(hash, entry) * self.replicas
        };
        PreferenceList {
            ring: self,
            slots: &self.preferences[start..start + self.replicas],
        }
    }

    /// Every member once, in the order met walking clockwise from `hash`: the preference
    /// list first, then the nodes after it (Dynamo's fallbacks, for hinted handoff). The
    /// walk allocates one bit per member and stops once every member was met.
    pub fn successors(&self, hash: u64) -> impl Iterator<Item = &Arc<str>> + '_ {
        let start = if self.tokens.is_empty() {
            0
        } else {
            self.successor_token(hash)
        };
        let mut seen = vec![false; self.nodes.len()];
        (0..self.tokens.len())
            .map(move |step| (start + step) % self.tokens.len())
            .filter_map(move |index| {
                let owner = usize::from(self.owners[index]);
                if std::mem::replace(&mut seen[owner], true) {
                    return None;
                }
                Some(&self.nodes[owner])
            })
            .take(self.nodes.len())
    }

    /// The primary replica of `key`, if the ring has members.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.preference_list(key).iter().next()
    }

    /// Index of the first token at or clockwise after `hash` (wrapping to 0).
    #[inline]
    fn successor_token(&self, hash: u64) -> usize {
        let entry = self.buckets[(hash >> self.bucket_shift) as usize];
        if entry & BUCKET_HOLDS_TOKEN == 0 {
            return entry as usize / self.replicas;
        }
        self.scan_tokens(hash, entry)
    }

    /// The successor of `hash` in a bucket that holds a token: compares from the
    /// bucket's first token on.
    #[inline]
    fn scan_tokens(&self, hash: u64, entry: u32) -> usize {
        let mut index = (entry & !BUCKET_HOLDS_TOKEN) as usize;
        while index < self.tokens.len() && self.tokens[index] < hash {
            index += 1;
        }
        if index == self.tokens.len() { 0 } else { index }
    }

    /// Physical member ids, sorted.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.nodes.iter().map(|node| &**node)
    }

    /// Number of physical members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Replicas per preference list: the configured N, capped at the member count.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Bytes held by the ring's tables (tokens, owners, preference lists, bucket index,
    /// member names): what one live ring version costs in memory.
    pub fn table_bytes(&self) -> usize {
        let names: usize = self
            .nodes
            .iter()
            .map(|node| node.len() + 2 * std::mem::size_of::<usize>())
            .sum();
        std::mem::size_of_val(self.nodes.as_slice())
            + names
            + std::mem::size_of_val(self.vnodes.as_slice())
            + std::mem::size_of_val(self.tokens.as_slice())
            + std::mem::size_of_val(self.owners.as_slice())
            + std::mem::size_of_val(self.preferences.as_slice())
            + std::mem::size_of_val(self.buckets.as_slice())
    }

    /// Every token and its owner, in ring order.
    pub fn tokens(&self) -> impl ExactSizeIterator<Item = (u64, &str)> + '_ {
        self.tokens
            .iter()
            .zip(&self.owners)
            .map(|(&t, &o)| (t, &*self.nodes[usize::from(o)]))
    }

    /// Each node's primary and replica share of the ring, in member order.
    pub fn ownership(&self) -> Vec<Ownership> {
        const RING_SIZE: f64 = 18_446_744_073_709_551_616.0; // 2^64
        let mut primary = vec![0.0_f64; self.nodes.len()];
        let mut replica = vec![0.0_f64; self.nodes.len()];
        for (i, &token) in self.tokens.iter().enumerate() {
            let previous = if i == 0 {
                self.tokens[self.tokens.len() - 1]
            } else {
                self.tokens[i - 1]
            };
            // The arc (previous, token]; with a single token it is the whole ring.
            let arc = if self.tokens.len() == 1 {
                RING_SIZE
            } else {
                token.wrapping_sub(previous) as f64
            };
            let list = &self.preferences[i * self.replicas..(i + 1) * self.replicas];
            primary[usize::from(list[0])] += arc / RING_SIZE;
            for &node in list {
                replica[usize::from(node)] += arc / RING_SIZE;
            }
        }
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Ownership {
                node: node.to_string(),
                vnodes: self.vnodes[i],
                primary_share: primary[i],
                replica_share: replica[i],
            })
            .collect()
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("tokens", &self.tokens.len())
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// The replicas for one key: a view into the ring, so it neither allocates nor copies.
#[derive(Clone, Copy)]
pub struct PreferenceList<'a> {
    ring: &'a Ring,
    slots: &'a [u16],
}

impl<'a> PreferenceList<'a> {
    /// Node ids, primary first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        self.iter_shared().map(|node| &**node)
    }

    /// Node ids as shared strings, primary first: a caller that must own a replica's name
    /// (to move it into a task) clones the `Arc` instead of copying the string.
    pub fn iter_shared(&self) -> impl ExactSizeIterator<Item = &'a Arc<str>> + 'a {
        let ring = self.ring;
        self.slots.iter().map(move |&i| &ring.nodes[usize::from(i)])
    }

    /// The replica at `index` (0 is the primary).
    pub fn get(&self, index: usize) -> Option<&'a Arc<str>> {
        self.slots
            .get(index)
            .map(|&i| &self.ring.nodes[usize::from(i)])
    }

    /// The index of `node` in the list, if it is a replica.
    pub fn position(&self, node: &str) -> Option<usize> {
        self.iter().position(|n| n == node)
    }

    /// Number of replicas in the list.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the list is empty (only for an empty ring).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `node` is one of the replicas.
    pub fn contains(&self, node: &str) -> bool {
        self.iter().any(|n| n == node)
    }
}

impl fmt::Debug for PreferenceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn validate_members(
    members: impl IntoIterator<Item = Member>,
) -> Result<BTreeMap<String, u32>, RingError> {
    let mut sorted = BTreeMap::new();
    for member in members {
        if member.id.is_empty() {
            return Err(RingError::EmptyNodeId);
        }
        if !(1..=MAX_VNODES).contains(&member.vnodes) {
            return Err(RingError::BadVnodeCount {
                node: member.id,
                vnodes: member.vnodes,
                max: MAX_VNODES,
            });
        }
        if sorted.contains_key(&member.id) {
            return Err(RingError::DuplicateNode(member.id));
        }
        sorted.insert(member.id, member.vnodes);
        if sorted.len() > MAX_MEMBERS {
            return Err(RingError::TooManyMembers {
                count: sorted.len(),
                max: MAX_MEMBERS,
            });
        }
    }
    Ok(sorted)
}

/// Every vnode's token, sorted by (token, node index) so equal tokens order stably.
fn place_tokens(nodes: &[Arc<str>], vnodes: &[u32]) -> (Vec<u64>, Vec<u16>) {
    let mut placed: Vec<(u64, u16)> = nodes
        .iter()
        .zip(vnodes)
        .enumerate()
        .flat_map(|(index, (id, &count))| {
            (0..count).map(move |v| (token_hash(id, v), index as u16))
        })
        .collect();
    placed.sort_unstable();
    placed.into_iter().unzip()
}

/// For each token, the first `replicas` distinct nodes met walking clockwise from it.
fn preference_table(owners: &[u16], node_count: usize, replicas: usize) -> Vec<u16> {
    let mut table = Vec::with_capacity(owners.len() * replicas);
    for start in 0..owners.len() {
        let first = table.len();
        for &owner in owners[start..].iter().chain(&owners[..start]) {
            if !table[first..].contains(&owner) {
                table.push(owner);
                if table.len() - first == replicas {
                    break;
                }
            }
        }
        debug_assert_eq!(table.len() - first, replicas.min(node_count));
    }
    table
}

/// Set in a bucket entry when a token lies inside the bucket, so the lookup must compare
/// against tokens. Entries fit below it: at most `MAX_MEMBERS * MAX_VNODES` tokens (2^22),
/// rows of at most `MAX_REPLICAS` (2^26 in all).
const BUCKET_HOLDS_TOKEN: u32 = 1 << 31;

/// Buckets per token, at most: with 8, about seven buckets in eight hold no token. The
/// count is rounded down to a power of two (4 to 8 per token, 16 to 32 bytes) and capped
/// at 2^22 buckets (16 MiB) for the largest rings.
const BUCKETS_PER_TOKEN: usize = 8;
const MAX_BUCKET_BITS: u32 = 22;

/// The bucket table over the top bits of the hash (see `Ring::buckets`).
fn bucket_index(tokens: &[u64], replicas: usize) -> (Vec<u32>, u32) {
    const _: () = assert!(
        (MAX_MEMBERS as u64) * (MAX_VNODES as u64) * (MAX_REPLICAS as u64)
            < BUCKET_HOLDS_TOKEN as u64
    );
    let bits = (tokens.len().max(1) * BUCKETS_PER_TOKEN)
        .ilog2()
        .clamp(1, MAX_BUCKET_BITS);
    let shift = 64 - bits;
    let mut buckets = Vec::with_capacity(1 << bits);
    let mut index = 0usize;
    for bucket in 0..(1u64 << bits) {
        let bucket_start = bucket << shift;
        while index < tokens.len() && tokens[index] < bucket_start {
            index += 1;
        }
        let bucket_last = bucket_start | (u64::MAX >> bits);
        let holds_token = index < tokens.len() && tokens[index] <= bucket_last;
        buckets.push(if holds_token {
            index as u32 | BUCKET_HOLDS_TOKEN
        } else if index == tokens.len() {
            0
        } else {
            (index * replicas) as u32
        });
    }
    (buckets, shift)
}
