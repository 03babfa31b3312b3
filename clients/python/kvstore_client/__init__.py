"""Python client for kvstore, a Dynamo-style replicated key-value store.

    from kvstore_client import Client

    with Client(["127.0.0.1:50051", "127.0.0.1:50052"]) as kv:
        kv.put("user:1", b"Hello")
        read = kv.get("user:1")            # None when the key does not exist
        print(read.value)                  # b"Hello"
        kv.put("user:1", b"Hi", context=read.context)   # replaces what was read
        read = kv.get("user:1")
        if read.has_siblings:              # concurrent writes came back together
            read.resolve(kv, lambda values: max(values))
        kv.delete("user:1", context=read.context)

Contexts carry causality: pass the context of a read to the write that replaces it;
without one a write is concurrent with what is stored and becomes a sibling. Errors
are typed by gRPC status (`InvalidArgument`, `Unavailable`, ...), each carrying the
node's message.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import grpc

from ._generated import kvstore_pb2 as pb
from ._generated import kvstore_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "Context",
    "Read",
    "KvstoreError",
    "InvalidArgument",
    "Unavailable",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
]


class KvstoreError(Exception):
    """A request the node refused or could not complete; `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, node: str):
        super().__init__(f"{code.name} from {node}: {message}")
        self.code = code
        self.message = message
        self.node = node


class InvalidArgument(KvstoreError):
    """The request is malformed or breaks a limit: fix it, do not retry it."""


class Unavailable(KvstoreError):
    """Not enough replicas (or no node) could be reached: retry later."""


class DeadlineExceeded(KvstoreError):
    """The request ran out of time; a write may or may not have been applied."""


class FailedPrecondition(KvstoreError):
    """The key's or the cluster's state refuses the request (e.g. too many siblings)."""


class Internal(KvstoreError):
    """The node failed (storage error, damaged data)."""


class Unauthenticated(KvstoreError):
    """The node needs a token (`Client(..., token=...)`) and got none, or a wrong one."""


class PermissionDenied(KvstoreError):
    """The token's role does not allow the call (read < write < admin)."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def _error(error: grpc.RpcError, node: str) -> KvstoreError:
    code = error.code()
    kind = _ERRORS.get(code, Internal)
    return kind(code, error.details() or "", node)


@dataclass(frozen=True)
class Context:
    """A causal context: the (node, counter) events a read saw. Opaque to callers."""

    entries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def _from_pb(cls, version: Optional[pb.Version]) -> "Context":
        if version is None:
            return cls()
        return cls(tuple(sorted((e.node_id, e.counter) for e in version.entries)))

    def _to_pb(self) -> pb.Version:
        return pb.Version(
            entries=[pb.VersionEntry(node_id=n, counter=c) for n, c in self.entries]
        )

    def __str__(self) -> str:
        return ",".join(f"{n}:{c}" for n, c in self.entries)


@dataclass(frozen=True)
class Read:
    """What a read returned: one value, or several concurrent ones (siblings)."""

    key: str
    values: list[bytes]
    context: Context = field(default_factory=Context)

    @property
    def value(self) -> bytes:
        """The value, when there is exactly one; raises ValueError with siblings."""
        if len(self.values) != 1:
            raise ValueError(
                f"{self.key!r} has {len(self.values)} siblings: use .values or .resolve()"
            )
        return self.values[0]

    @property
    def has_siblings(self) -> bool:
        return len(self.values) > 1

    def resolve(
        self, client: "Client", merge: Callable[[list[bytes]], bytes], w: int = 0
    ) -> Context:
        """Writes `merge(values)` with this read's context, replacing every sibling."""
        return client.put(self.key, merge(list(self.values)), context=self.context, w=w)


class Client:
    """A client of a kvstore cluster: any node coordinates any key.

    Requests go to the nodes in turn. A request that cannot reach a node at all (the
    connection is refused) moves on to the next node; any answer from a node, success
    or error, is final, so a write is never sent twice.
    """

    def __init__(
        self,
        addresses: Sequence[str] | str,
        timeout_s: float = 10.0,
        client_id: Optional[str] = None,
        token: Optional[str] = None,
    ):
        """`token`: a bearer token, for nodes started with --auth-tokens."""
        if isinstance(addresses, str):
            addresses = [addresses]
        if not addresses:
            raise ValueError("give at least one node address, e.g. 127.0.0.1:50051")
        self._nodes = [(a, grpc.insecure_channel(a)) for a in addresses]
        self._stubs = [(a, pb_grpc.KVStoreStub(ch)) for a, ch in self._nodes]
        self._turn = itertools.cycle(range(len(self._stubs)))
        self._timeout_s = timeout_s
        self._client_id = client_id or f"py-{uuid.uuid4().hex[:8]}"
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        for _, channel in self._nodes:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put(
        self,
        key: str,
        value: bytes | str,
        context: Optional[Context] = None,
        w: int = 0,
        sloppy: Optional[bool] = None,
    ) -> Context:
        """Writes `value`; with the `context` of a read it replaces what was read.
        `sloppy=True` lets a fallback's hint for a replica that is down count toward W
        (the write succeeds while W nodes are reachable; a read may miss it until the
        hint is delivered), `sloppy=False` counts only replicas, None uses the node's
        setting. Returns the context after the write (pass it to supersede this write)."""
        if isinstance(value, str):
            value = value.encode()
        request = pb.PutRequest(
            key=key,
            value=value,
            consistency_w=w,
            version=(context or Context())._to_pb(),
            client_id=self._client_id,
            request_id=uuid.uuid4().hex,
            write_mode=_write_mode(sloppy),
        )
        response = self._call(lambda stub, t: stub.Put(request, timeout=t, metadata=self._metadata))
        return Context._from_pb(response.version)

    def get(self, key: str, r: int = 0) -> Optional[Read]:
        """Reads `key`: None if it was never written or is deleted, else a Read."""
        request = pb.GetRequest(
            key=key,
            consistency_r=r,
            client_id=self._client_id,
            request_id=uuid.uuid4().hex,
        )
        response = self._call(lambda stub, t: stub.Get(request, timeout=t, metadata=self._metadata))
        if response.status == pb.NOT_FOUND:
            return None
        if response.conflicts:
            values = [v.value for v in response.conflicts if not v.deleted]
        else:
            values = [response.value.value]
        return Read(key=key, values=values, context=Context._from_pb(response.context))

    def delete(
        self,
        key: str,
        context: Optional[Context] = None,
        w: int = 0,
        sloppy: Optional[bool] = None,
    ) -> Context:
        """Deletes `key` (a tombstone covering `context`; without one, a blind delete).
        `sloppy` as for `put`."""
        request = pb.DeleteRequest(
            key=key,
            consistency_w=w,
            version=(context or Context())._to_pb(),
            client_id=self._client_id,
            request_id=uuid.uuid4().hex,
            write_mode=_write_mode(sloppy),
        )
        response = self._call(lambda stub, t: stub.Delete(request, timeout=t, metadata=self._metadata))
        return Context._from_pb(response.version)

    def _call(self, call):
        unreachable: list[str] = []
        for _ in range(len(self._stubs)):
            address, stub = self._stubs[next(self._turn)]
            try:
                return call(stub, self._timeout_s)
            except grpc.RpcError as error:
                if _never_reached(error):
                    unreachable.append(address)
                    continue
                raise _error(error, address) from None
        raise Unavailable(
            grpc.StatusCode.UNAVAILABLE,
            f"no node could be reached ({', '.join(unreachable)})",
            unreachable[-1] if unreachable else "-",
        )


def _write_mode(sloppy: Optional[bool]) -> int:
    if sloppy is None:
        return pb.WRITE_MODE_DEFAULT
    return pb.WRITE_MODE_SLOPPY if sloppy else pb.WRITE_MODE_STRICT


def _never_reached(error: grpc.RpcError) -> bool:
    """Whether the request certainly never reached a node (no connection was made)."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    return any(
        marker in details
        for marker in ("failed to connect", "connection refused", "connect failed")
    )
