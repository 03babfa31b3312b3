//! One simulated run: start the cluster, form its ring, run clients under the seed's
//! fault schedule (ring changes included), heal, let the ring settle, repair every key,
//! collect the evidence and check it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kv_storage::Siblings;

use crate::checker::{self, CheckInput, KeyEvidence};
use crate::cluster::SimCluster;
use crate::faults::{self, ChangeKind, Fault, FaultKind, ScheduleLimits};
use crate::history::{Op, OpKind, Outcome, TraceHasher};
use crate::report::{Availability, SeedReport, WriteAvailability};
use crate::rng::SimRng;
use crate::workload::{self, ClientRequest, History, QuorumMode, WorkloadConfig};

/// Simulated time the cluster gets to converge before the workload starts, and again
/// after the faults end.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(60);
/// Attempts of each final R=N read before the key is reported unreadable.
const FINAL_READ_ATTEMPTS: usize = 10;
/// Wait after the final reads so read repair (after its late-reply grace) lands.
const REPAIR_SETTLE: Duration = Duration::from_secs(5);
/// Anti-entropy rounds every node gets after the faults heal, before the replicas are
/// compared without any read.
const AAE_ROUNDS_AFTER_HEAL: u32 = 3;

/// What a run looks like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster (3..=7 is the intended range). With more nodes than N, the
    /// last one starts outside the ring, a spare for joins and replacements.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: usize,
    /// How long the clients run (simulated), after the cluster converged.
    pub workload: Duration,
    /// Most faults in one run.
    pub max_faults: u64,
    /// Print this key's history, mints and replica states to stderr (for replays).
    pub dump_key: Option<String>,
    /// Strict or sloppy writes, or a random choice per write.
    pub mode: QuorumMode,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 5,
            clients: 4,
            keys: 6,
            workload: Duration::from_secs(20),
            max_faults: 4,
            dump_key: None,
            mode: QuorumMode::Mixed,
        }
    }
}

/// The command that replays `seed` with `config`.
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    format!(
        "cargo xtask sim --seed {seed} --nodes {} --clients {} --keys {} --workload-secs {} --max-faults {} --quorum-mode {}",
        config.nodes,
        config.clients,
        config.keys,
        config.workload.as_secs(),
        config.max_faults,
        config.mode.name()
    )
}

/// Runs `seed` in a fresh single-threaded runtime on a paused clock and checks it.
pub fn run_seed(seed: u64, config: &SimConfig) -> SeedReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(simulate(seed, config))
}

impl SimConfig {
    /// Nodes in the ring when the workload starts.
    pub fn initial_members(&self, replicas: usize) -> usize {
        if self.nodes > replicas {
            self.nodes - 1
        } else {
            self.nodes
        }
    }
}

async fn simulate(seed: u64, config: &SimConfig) -> SeedReport {
    let cluster = SimCluster::start(seed, config.nodes);
    let mut violations = Vec::new();
    let members = config.initial_members(cluster.replication_factor());
    if let Err(message) = cluster.form(members, CONVERGENCE_LIMIT).await {
        violations.push(format!("initial {message}"));
    }
    let workload_start = cluster.now();
    let workload_end = workload_start + config.workload;
    let schedule = faults::generate(
        &mut SimRng::fork(seed, 3),
        &ScheduleLimits {
            nodes: config.nodes,
            start_after: workload_start + Duration::from_secs(1),
            workload_end,
            max_faults: config.max_faults,
        },
    );
    let history: History = Arc::new(Mutex::new(Vec::new()));
    let faults_task = tokio::spawn(run_faults(Arc::clone(&cluster), schedule.clone()));
    let workload = WorkloadConfig {
        clients: config.clients,
        keys: config.keys,
        end: workload_end,
        allow_w1: !schedule.iter().any(loses_a_copy),
        max_think: Duration::from_millis(250),
        mode: config.mode,
    };
    let clients: Vec<_> = (0..config.clients)
        .map(|client| {
            let rng = SimRng::fork(seed, 100 + client as u64);
            let task = workload::run_client(
                Arc::clone(&cluster),
                client,
                rng,
                workload.clone(),
                Arc::clone(&history),
            );
            tokio::spawn(task)
        })
        .collect();
    for client in clients {
        client.await.expect("a client task does not panic");
    }
    faults_task.await.expect("the fault task does not panic");

    cluster.apply_network_faults(&[]);
    cluster.restart_all();
    if let Err(message) = cluster.wait_converged(CONVERGENCE_LIMIT).await {
        violations.push(format!("after healing, {message}"));
    }
    tokio::time::sleep(cluster.anti_entropy_interval() * AAE_ROUNDS_AFTER_HEAL).await;
    violations.extend(checker::check_converged_without_reads(&collect_evidence(
        &cluster, config,
    )));
    if let Err(message) = cluster.wait_hints_drained(CONVERGENCE_LIMIT).await {
        violations.push(format!(
            "eventual delivery: {message}; pending: {}",
            cluster.pending_hints().join("; ")
        ));
    }
    violations.extend(check_cleaned(&cluster, config).await);
    final_reads(&cluster, config, &history).await;
    tokio::time::sleep(REPAIR_SETTLE).await;

    let history = std::mem::take(&mut *history.lock().unwrap_or_else(PoisonError::into_inner));
    let evidence = collect_evidence(&cluster, config);
    if let Some(key) = &config.dump_key {
        dump_key(key, &history, &evidence);
    }
    let amnesia_at: Vec<Duration> = schedule
        .iter()
        .filter(|f| loses_a_copy(f))
        .map(|f| f.start)
        .collect();
    violations.extend(checker::check(&CheckInput {
        history: &history,
        keys: &evidence,
        replicas: cluster.replication_factor(),
        amnesia_at: &amnesia_at,
    }));
    let simulated = cluster.now();
    let ring_changes = cluster.ring_changes();
    cluster.shut_down();
    let mut report = report(seed, &schedule, &history, violations, simulated);
    report.ring_changes = ring_changes;
    report
}

/// Whether `fault` may take a replica's copies out of the cluster: a crash that loses
/// memory, or a ring change that can drop a dead member (its disk leaves with it). A
/// write acknowledged by that replica alone (W=1) is then lost, as Dynamo allows.
fn loses_a_copy(fault: &Fault) -> bool {
    matches!(
        fault.kind,
        FaultKind::Crash {
            lose_memory: true,
            ..
        } | FaultKind::RingChange {
            change: ChangeKind::Remove | ChangeKind::Replace,
            ..
        }
    )
}

/// Applies `schedule`: at every start or end of a fault, installs the network faults
/// active from then on, crashes or restarts nodes, and starts the ring changes due; then
/// waits for the ring changes to be made (or given up).
async fn run_faults(cluster: Arc<SimCluster>, schedule: Vec<Fault>) {
    let mut moments: Vec<Duration> = schedule.iter().flat_map(|f| [f.start, f.end()]).collect();
    moments.sort_unstable();
    moments.dedup();
    let mut changes = Vec::new();
    for moment in moments {
        tokio::time::sleep_until(cluster.origin() + moment).await;
        for fault in schedule.iter().filter(|f| f.start == moment) {
            if let FaultKind::RingChange { change, pick } = fault.kind {
                let cluster = Arc::clone(&cluster);
                changes.push(tokio::spawn(async move {
                    cluster.change_ring(change, pick).await;
                }));
            }
        }
        let active: Vec<&Fault> = schedule.iter().filter(|f| f.active_at(moment)).collect();
        cluster.apply_network_faults(&active);
        for node in 0..cluster.size() {
            let crash = active.iter().find_map(|f| match f.kind {
                FaultKind::Crash {
                    node: n,
                    lose_memory,
                } if n == node => Some(lose_memory),
                _ => None,
            });
            match crash {
                Some(lose_memory) => cluster.crash(node, lose_memory),
                None => cluster.restart(node),
            }
        }
    }
    for change in changes {
        change.await.expect("a ring change task does not panic");
    }
}

/// Reads every key with R=N (retrying while the cluster settles) so read repair brings
/// every replica up to date. The reads join the history: they are checked too.
async fn final_reads(cluster: &SimCluster, config: &SimConfig, history: &History) {
    for key in 0..config.keys {
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let request = ClientRequest {
                client: config.clients,
                kind: OpKind::Get,
                key,
                node: (key + attempt) % config.nodes,
                value: None,
                context: None,
                quorum: cluster.replication_factor() as u32,
                sloppy: false,
            };
            let op = workload::execute(cluster, request).await;
            let done = op.succeeded();
            history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(op);
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Once every member's cleanup pass for the settled version is done, no member holds a
/// key it does not replicate (a stale copy anti-entropy could bring back later).
async fn check_cleaned(cluster: &SimCluster, config: &SimConfig) -> Vec<String> {
    if let Err(message) = cluster.wait_cleaned(CONVERGENCE_LIMIT).await {
        return vec![message];
    }
    (0..config.keys)
        .flat_map(|key| {
            let name = workload::key_name(key);
            cluster
                .holders_outside_replicas(name.as_bytes())
                .into_iter()
                .map(move |id| {
                    format!("key {name}: {id} still holds it after cleanup, not a replica")
                })
        })
        .collect()
}

fn collect_evidence(cluster: &SimCluster, config: &SimConfig) -> Vec<KeyEvidence> {
    let router = cluster.node(0).expect("every node runs after healing");
    (0..config.keys)
        .map(|key| {
            let key = Bytes::from(workload::key_name(key));
            let replicas: Vec<(String, Option<Siblings>)> = router
                .replicas_for(&key)
                .into_iter()
                .map(|id| {
                    let state = cluster.stored(&id, &key);
                    (id, state)
                })
                .collect();
            KeyEvidence {
                mints: cluster.mints().of(&key),
                key,
                replicas,
            }
        })
        .collect()
}

fn report(
    seed: u64,
    schedule: &[Fault],
    history: &[Op],
    violations: Vec<String>,
    simulated: Duration,
) -> SeedReport {
    let mut trace = TraceHasher::default();
    for fault in schedule {
        trace.add(fault);
    }
    for op in history {
        trace.add(op);
    }
    let mut availability = Availability::default();
    let mut writes_w2 = WriteAvailability::default();
    for op in history {
        let active = active_labels(schedule, op);
        availability.record(&active, op.succeeded());
        if op.kind != OpKind::Get && op.quorum <= 2 {
            let faults = schedule.iter().filter(|f| f.active_at(op.start)).count();
            writes_w2.record(op.sloppy, faults, &active, op.succeeded());
        }
    }
    SeedReport {
        seed,
        trace_hash: trace.finish(),
        simulated,
        ops: history.len() as u64,
        acknowledged_writes: history
            .iter()
            .filter(|op| op.is_acknowledged_write())
            .count() as u64,
        reads_with_siblings: history
            .iter()
            .filter(|op| matches!(&op.outcome, Outcome::Read { values, .. } if values.len() > 1))
            .count() as u64,
        faults: schedule.iter().map(|f| f.kind.label()).collect(),
        schedule: schedule.iter().map(ToString::to_string).collect(),
        ring_changes: Vec::new(),
        availability,
        writes_w2,
        violations,
    }
}

/// The labels of the faults active when `op` started; a request that entered the
/// cluster on the majority side of a partition also counts under `partition-majority`.
fn active_labels(schedule: &[Fault], op: &Op) -> Vec<&'static str> {
    let mut labels = Vec::new();
    for fault in schedule.iter().filter(|f| f.active_at(op.start)) {
        labels.push(fault.kind.label());
        if let FaultKind::Partition { side } = &fault.kind
            && !side.contains(&op.node)
        {
            labels.push(PARTITION_MAJORITY);
        }
    }
    labels
}

/// Requests that entered on the majority side of a partition.
const PARTITION_MAJORITY: &str = "partition-majority";

fn dump_key(key: &str, history: &[Op], evidence: &[KeyEvidence]) {
    for op in history.iter().filter(|op| op.key == key.as_bytes()) {
        eprintln!(
            "{:>8.3}..{:>8.3} c{} -> node {} {:?} {:?} ctx={:?} q={} => {:?}",
            op.start.as_secs_f64(),
            op.end.as_secs_f64(),
            op.client,
            op.node,
            op.kind,
            op.value,
            op.context,
            op.quorum,
            op.outcome
        );
    }
    for key_evidence in evidence.iter().filter(|e| e.key == key.as_bytes()) {
        for mint in &key_evidence.mints {
            eprintln!("mint {mint:?}");
        }
        for (replica, state) in &key_evidence.replicas {
            eprintln!("replica {replica}: {state:?}");
        }
    }
}
