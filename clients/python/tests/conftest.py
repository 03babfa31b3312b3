"""A real 3-node kvstore cluster for the tests: `kvstore serve` processes with a static
peer list and memory storage on free 127.0.0.1 ports, stopped after the tests.

KVSTORE_BIN names the server binary (default: the workspace's target/debug/kvstore).
"""

import os
import pathlib
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

from kvstore_client._generated import kvstore_pb2 as pb
from kvstore_client._generated import kvstore_pb2_grpc as pb_grpc

ROOT = pathlib.Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 30


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _serving(address):
    try:
        with grpc.insecure_channel(address) as channel:
            health = pb_grpc.MembershipStub(channel).Health(pb.HealthRequest(), timeout=1)
            return health.status == "SERVING"
    except grpc.RpcError:
        return False


class LocalCluster:
    def __init__(self, binary, count=3, extra_args=()):
        self.extra_args = list(extra_args)
        self.binary = binary
        self.logs = tempfile.mkdtemp(prefix="kvstore-pytest-")
        ports = _free_ports(2 * count)
        self.addresses = {f"n{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports[:count])}
        # The node-to-node service has its own port; static peers name it.
        self.internal = {f"n{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports[count:])}
        self.processes = {}
        for node in self.addresses:
            self.start(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        for node, address in self.addresses.items():
            while not _serving(address):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node} did not serve; log in {self.logs}")
                time.sleep(0.1)

    def start(self, node):
        peers = ",".join(f"{n}={a}" for n, a in self.internal.items() if n != node)
        log = open(os.path.join(self.logs, f"{node}.log"), "ab")
        self.processes[node] = subprocess.Popen(
            [
                self.binary, "serve", "--node-id", node, "--listen", self.addresses[node],
                "--internal-listen", self.internal[node],
                "--peers", peers, "--storage", "memory", "--peer-timeout-ms", "500",
                "--request-timeout-ms", "2000", *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, node):
        process = self.processes.pop(node)
        process.kill()
        process.wait(timeout=10)

    def stop(self):
        for node in list(self.processes):
            self.kill(node)


def _binary():
    binary = os.environ.get("KVSTORE_BIN", str(ROOT / "target" / "debug" / "kvstore"))
    if not os.path.isfile(binary):
        pytest.fail(f"no kvstore binary at {binary}: run cargo build -p kvstore first")
    return binary


@pytest.fixture(scope="session")
def cluster():
    local = LocalCluster(_binary())
    yield local
    local.stop()


# Tokens of the secured cluster, by role.
TOKENS = {
    "read": "py-read-0123456789abcdef",
    "write": "py-write-0123456789abcdef",
    "admin": "py-admin-0123456789abcdef",
}


@pytest.fixture(scope="session")
def secured_cluster(tmp_path_factory):
    """A cluster whose nodes need a bearer token (`--auth-tokens`), one per role."""
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text("".join(f"{role} py-{role} {token}\n" for role, token in TOKENS.items()))
    local = LocalCluster(_binary(), extra_args=["--auth-tokens", str(path)])
    yield local
    local.stop()
