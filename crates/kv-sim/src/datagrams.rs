//! Gossip datagrams between simulated nodes: each node has an inbox keyed by its gossip
//! address, and every datagram meets the same fate the RPC transport's messages do
//! (the shared [`SimNetwork`] decides loss, delay and partitions).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use kv_node::Datagrams;

use crate::net::{Fate, SimNetwork};
use tokio::sync::mpsc;

/// Datagrams waiting in one node's inbox before it drops more, like a socket buffer.
const INBOX_DATAGRAMS: usize = 1024;

type Inbox = mpsc::Sender<(Vec<u8>, SocketAddr)>;

/// The datagram side of a simulated network.
#[derive(Debug)]
pub struct DatagramNet {
    network: Arc<SimNetwork>,
    inboxes: Mutex<BTreeMap<SocketAddr, (String, Inbox)>>,
}

impl DatagramNet {
    /// Datagrams over `network`'s faults.
    pub fn new(network: Arc<SimNetwork>) -> Arc<Self> {
        Arc::new(Self {
            network,
            inboxes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Binds `node_id` to `addr`, replacing an earlier incarnation's socket.
    pub fn bind(self: &Arc<Self>, node_id: &str, addr: SocketAddr) -> SimSocket {
        let (sender, receiver) = mpsc::channel(INBOX_DATAGRAMS);
        self.lock().insert(addr, (node_id.to_owned(), sender));
        SimSocket {
            node_id: node_id.to_owned(),
            addr,
            net: Arc::clone(self),
            inbox: tokio::sync::Mutex::new(receiver),
        }
    }

    /// Closes `addr` (its node crashed): datagrams to it are lost until it binds again.
    pub fn unbind(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, (String, Inbox)>> {
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, data: Vec<u8>, from: SocketAddr, to: SocketAddr) {
        if let Some((_, inbox)) = self.lock().get(&to) {
            // A full inbox drops the datagram, as a socket buffer would.
            let _ = inbox.try_send((data, from));
        }
    }
}

/// One node's gossip socket on a [`DatagramNet`].
#[derive(Debug)]
pub struct SimSocket {
    node_id: String,
    addr: SocketAddr,
    net: Arc<DatagramNet>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
}

impl Datagrams for SimSocket {
    async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let target = self.net.lock().get(&to).map(|(id, _)| id.clone());
        let Some(target) = target else {
            return Ok(data.len());
        };
        if let Fate::Deliver(delay) = self.net.network.fate(&self.node_id, &target) {
            let (net, data, from) = (Arc::clone(&self.net), data.to_vec(), self.addr);
            if delay.is_zero() {
                net.deliver(data, from, to);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    net.deliver(data, from, to);
                });
            }
        }
        Ok(data.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let received = self.inbox.lock().await.recv().await;
        let Some((data, from)) = received else {
            return std::future::pending().await;
        };
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Ok((len, from))
    }
}
