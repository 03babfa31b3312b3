//! Anti-entropy on small static clusters over the simulated network, on tokio's paused
//! clock: replicas that missed writes, or lost everything, catch up without a single
//! client read; an interrupted exchange resumes; tombstones are reaped only once every
//! replica agreed on them and the grace period passed, and a replica that was away longer
//! than that does not bring a deleted value back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_node::{ClientRead, ClientWrite, NodeBuilder, NodeConfig, PeerSpec};
use kv_sim::net::{SimNetwork, SimNode};
use kv_storage::{MemoryStore, Siblings, Storage};

const GRACE: Duration = Duration::from_secs(60);

struct Cluster {
    network: Arc<SimNetwork>,
    nodes: Vec<Arc<SimNode>>,
    stores: Vec<Arc<MemoryStore>>,
    starts: u64,
}

fn config(id: usize, count: usize) -> NodeConfig {
    let address = |i: usize| format!("127.0.0.1:{}", 50050 + i).parse().unwrap();
    let mut config = NodeConfig::new(format!("n{id}"), address(id));
    config.peers = (1..=count)
        .filter(|&i| i != id)
        .map(|i| PeerSpec {
            node_id: format!("n{i}"),
            internal_address: address(i),
        })
        .collect();
    config.anti_entropy.tombstone_grace = GRACE;
    config
}

impl Cluster {
    fn new(count: usize) -> Self {
        let mut cluster = Self {
            network: SimNetwork::new(7),
            nodes: Vec::new(),
            stores: Vec::new(),
            starts: 0,
        };
        for id in 1..=count {
            let store = Arc::new(MemoryStore::new(kv_ring::key_hash));
            let node = cluster.boot(id, count, Arc::clone(&store));
            cluster.nodes.push(node);
            cluster.stores.push(store);
        }
        cluster
    }

    fn boot(&mut self, id: usize, count: usize, store: Arc<MemoryStore>) -> Arc<SimNode> {
        self.starts += 1;
        let config = config(id, count);
        let transport = self
            .network
            .transport(&config.node_id, &config.peers, config.peer_timeout);
        let node = NodeBuilder::new(config, transport)
            .storage(store)
            .start_token(self.starts)
            .build()
            .unwrap();
        self.network.register(&node);
        node
    }

    /// Replaces node `id` (1-based) with a fresh process on an empty store: a lost disk.
    fn wipe(&mut self, id: usize) {
        let store = Arc::new(MemoryStore::new(kv_ring::key_hash));
        let count = self.nodes.len();
        self.nodes[id - 1] = self.boot(id, count, Arc::clone(&store));
        self.stores[id - 1] = store;
    }

    fn node(&self, id: usize) -> &Arc<SimNode> {
        &self.nodes[id - 1]
    }

    async fn write(
        &self,
        via: usize,
        key: &str,
        value: Option<&str>,
        context: &VersionVector,
        w: u32,
    ) {
        let write = ClientWrite {
            key: key.to_owned(),
            value: value.map(|v| Bytes::from(v.to_owned())),
            consistency_w: w,
            version: context.iter().map(|(a, c)| (a.to_string(), c)).collect(),
            ..ClientWrite::default()
        };
        self.node(via).client_put(write).await.unwrap();
    }

    /// Every node's store holds the same versions of every key in `keys`.
    fn agree_on(&self, keys: &[String]) -> bool {
        keys.iter().all(|key| {
            let first = self.stores[0].get(key.as_bytes()).unwrap();
            self.stores
                .iter()
                .all(|store| store.get(key.as_bytes()).unwrap() == first)
        })
    }

    async fn rounds(&self) {
        for node in &self.nodes {
            node.anti_entropy_round().await;
        }
    }
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("key-{i}")).collect()
}

fn values(versions: Option<&Siblings>) -> Vec<Option<Bytes>> {
    versions
        .map(|v| v.values().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_missed_writes_catches_up_without_reads() {
    let cluster = Cluster::new(3);
    let keys = keys(300);
    cluster.network.set_down("n3", true);
    for key in &keys {
        cluster
            .write(1, key, Some("v1"), &VersionVector::new(), 2)
            .await;
    }
    cluster.network.set_down("n3", false);
    assert!(!cluster.agree_on(&keys), "n3 missed every write");
    assert_eq!(cluster.stores[2].count().unwrap(), 0);

    cluster.node(1).anti_entropy_round().await;
    assert!(cluster.agree_on(&keys), "one round of n1 repaired n3");
    let status = cluster.node(1).anti_entropy_status();
    let with_n3 = status.peers.iter().find(|p| p.peer == "n3").unwrap();
    assert_eq!(with_n3.keys_repaired, 300);
    assert!(with_n3.last_error.is_none());
    let with_n2 = status.peers.iter().find(|p| p.peer == "n2").unwrap();
    assert_eq!(with_n2.keys_repaired, 0, "n2 was in agreement: {with_n2:?}");
    // A second round finds nothing and moves nothing.
    cluster.node(1).anti_entropy_round().await;
    let again = cluster.node(1).anti_entropy_status();
    let with_n3 = again.peers.iter().find(|p| p.peer == "n3").unwrap();
    assert_eq!((with_n3.exchanges, with_n3.keys_repaired), (2, 300));
    assert_eq!(with_n3.last_keys_repaired, 0);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_lost_its_disk_is_refilled() {
    let mut cluster = Cluster::new(3);
    let keys = keys(200);
    for key in &keys {
        cluster
            .write(1, key, Some("v1"), &VersionVector::new(), 3)
            .await;
    }
    cluster.wipe(3);
    assert_eq!(cluster.stores[2].count().unwrap(), 0);
    cluster.node(3).anti_entropy_round().await;
    assert!(cluster.agree_on(&keys), "n3 pulled everything back");
    assert_eq!(cluster.node(3).anti_entropy_status().tree_items, 200);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_exchange_resumes_later_without_loss() {
    let cluster = Cluster::new(3);
    let keys = keys(100);
    cluster.network.set_down("n3", true);
    for key in &keys {
        cluster
            .write(1, key, Some("v1"), &VersionVector::new(), 2)
            .await;
    }
    cluster.network.set_down("n3", false);
    // n3 answers nothing: the exchange fails, and says why.
    cluster.network.set_hanging("n3", true);
    cluster.node(1).anti_entropy_round().await;
    let failed = cluster.node(1).anti_entropy_status();
    let with_n3 = failed.peers.iter().find(|p| p.peer == "n3").unwrap();
    assert!(with_n3.last_error.is_some(), "{with_n3:?}");
    assert!(!cluster.agree_on(&keys));
    cluster.network.set_hanging("n3", false);
    cluster.node(1).anti_entropy_round().await;
    assert!(cluster.agree_on(&keys));
    let done = cluster.node(1).anti_entropy_status();
    let with_n3 = done.peers.iter().find(|p| p.peer == "n3").unwrap();
    assert_eq!(
        with_n3.keys_repaired, 100,
        "each key repaired once: {with_n3:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn tombstones_are_reaped_once_every_replica_agreed_and_the_grace_passed() {
    let cluster = Cluster::new(3);
    let keys = keys(50);
    for key in &keys {
        cluster
            .write(1, key, Some("v1"), &VersionVector::new(), 3)
            .await;
        let written = cluster.stores[0].get(key.as_bytes()).unwrap().unwrap();
        cluster.write(2, key, None, &written.join(), 3).await;
    }
    assert_eq!(cluster.node(1).anti_entropy_status().tombstones_pending, 50);
    // Agreement alone is not enough: the grace period must pass too.
    cluster.rounds().await;
    assert!(cluster.stores.iter().all(|s| s.count().unwrap() == 50));
    tokio::time::sleep(GRACE).await;
    cluster.rounds().await;
    for (i, store) in cluster.stores.iter().enumerate() {
        assert_eq!(
            store.count().unwrap(),
            0,
            "n{} kept tombstones: {:#?}",
            i + 1,
            cluster.nodes[i].anti_entropy_status()
        );
    }
    let status = cluster.node(1).anti_entropy_status();
    assert_eq!(
        (status.tombstones_pending, status.tombstones_reaped),
        (0, 50)
    );
    assert_eq!(status.tree_items, 0);
    // Later rounds do not bring them back either.
    cluster.rounds().await;
    assert!(cluster.stores.iter().all(|s| s.count().unwrap() == 0));
    let read = cluster
        .node(3)
        .client_get(ClientRead {
            key: keys[0].clone(),
            consistency_r: 3,
            ..ClientRead::default()
        })
        .await
        .unwrap();
    assert!(read.is_none(), "{read:?}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_away_longer_than_the_grace_does_not_bring_a_deleted_value_back() {
    let cluster = Cluster::new(3);
    let key = "deleted".to_owned();
    cluster
        .write(1, &key, Some("old"), &VersionVector::new(), 3)
        .await;
    cluster.network.set_down("n3", true);
    let written = cluster.stores[0].get(key.as_bytes()).unwrap().unwrap();
    cluster.write(1, &key, None, &written.join(), 2).await;
    // n3 is away far longer than the grace period; n1 and n2 keep exchanging.
    for _ in 0..5 {
        tokio::time::sleep(GRACE).await;
        cluster.rounds().await;
    }
    for store in &cluster.stores[..2] {
        assert_eq!(
            values(store.get(key.as_bytes()).unwrap().as_ref()),
            [None],
            "the tombstone must stay while a replica that never saw it is away"
        );
    }
    assert_eq!(
        values(cluster.stores[2].get(key.as_bytes()).unwrap().as_ref()),
        [Some(Bytes::from("old"))]
    );
    // n3 comes back with the deleted value: the tombstone's history covers it.
    cluster.network.set_down("n3", false);
    cluster.rounds().await;
    assert!(cluster.agree_on(std::slice::from_ref(&key)));
    assert_eq!(
        values(cluster.stores[2].get(key.as_bytes()).unwrap().as_ref()),
        [None]
    );
    tokio::time::sleep(GRACE).await;
    cluster.rounds().await;
    cluster.rounds().await;
    assert!(
        cluster
            .stores
            .iter()
            .all(|s| s.get(key.as_bytes()).unwrap().is_none())
    );
    let read = cluster
        .node(2)
        .client_get(ClientRead {
            key: key.clone(),
            consistency_r: 3,
            ..ClientRead::default()
        })
        .await
        .unwrap();
    assert!(read.is_none(), "the deleted value came back: {read:?}");
}
