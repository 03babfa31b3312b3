"""The Python client against a real cluster: reads and writes with contexts, siblings
and their resolution, deletes, typed errors, and failover past an unreachable node."""

import uuid

import pytest

from conftest import TOKENS
from kvstore_client import Client, InvalidArgument, PermissionDenied, Unauthenticated, Unavailable


def key(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_put_get_and_a_write_with_the_context_replaces_the_value(cluster):
    with Client(list(cluster.addresses.values())) as kv:
        k = key("user")
        kv.put(k, b"Hello")
        read = kv.get(k)
        assert read.value == b"Hello"
        assert not read.has_siblings
        kv.put(k, "Hi", context=read.context)
        assert kv.get(k).values == [b"Hi"]


def test_blind_writes_become_siblings_and_resolve_merges_them(cluster):
    addresses = list(cluster.addresses.values())
    k = key("cart")
    with Client(addresses[0]) as first, Client(addresses[1]) as second:
        first.put(k, b"apple")
        second.put(k, b"pear")
        read = first.get(k)
        assert read.has_siblings
        assert sorted(read.values) == [b"apple", b"pear"]
        with pytest.raises(ValueError, match="siblings"):
            read.value
        read.resolve(first, lambda values: b",".join(sorted(values)))
        assert second.get(k).value == b"apple,pear"


def test_delete_with_the_context_makes_the_key_absent(cluster):
    with Client(list(cluster.addresses.values())) as kv:
        k = key("gone")
        kv.put(k, b"x")
        kv.delete(k, context=kv.get(k).context)
        assert kv.get(k) is None
        assert kv.get(key("never-written")) is None


def test_bad_input_is_invalid_argument_with_the_nodes_message(cluster):
    with Client(list(cluster.addresses.values())) as kv:
        with pytest.raises(InvalidArgument) as refused:
            kv.put("", b"no key")
        assert "key" in refused.value.message
        with pytest.raises(InvalidArgument):
            kv.put(key("w"), b"v", w=7)


def test_an_unreachable_node_is_skipped_and_an_all_down_list_is_unavailable(cluster):
    live = list(cluster.addresses.values())[0]
    with Client(["127.0.0.1:1", live]) as kv:
        k = key("failover")
        for _ in range(3):
            kv.put(k, b"v", context=kv.get(k).context if kv.get(k) else None)
        assert kv.get(k).value == b"v"
    with Client(["127.0.0.1:1"], timeout_s=2) as nobody:
        with pytest.raises(Unavailable, match="no node could be reached"):
            nobody.get("anything")


def test_a_quorum_that_cannot_be_met_is_unavailable(cluster):
    cluster.kill("n3")
    try:
        with Client(cluster.addresses["n1"]) as kv:
            with pytest.raises(Unavailable):
                kv.put(key("strict"), b"v", w=3)
            kv.put(key("relaxed"), b"v", w=2)
    finally:
        cluster.start("n3")


def test_sloppy_and_strict_writes_and_no_node_counts_twice(cluster):
    with Client(cluster.addresses["n1"]) as kv:
        k = key("mode")
        kv.put(k, b"strict", w=2, sloppy=False)
        kv.put(k, b"sloppy", context=kv.get(k).context, w=2, sloppy=True)
        assert kv.get(k).value == b"sloppy"
    cluster.kill("n2")
    cluster.kill("n3")
    try:
        with Client(cluster.addresses["n1"]) as kv:
            # Three nodes, N=3: no node lies outside a key's replicas, so there is no
            # fallback and a sloppy W=2 cannot be met by n1 alone.
            with pytest.raises(Unavailable):
                kv.put(key("alone"), b"v", w=2, sloppy=True)
    finally:
        cluster.start("n2")
        cluster.start("n3")


def test_tokens_and_roles(secured_cluster):
    address = secured_cluster.addresses["n1"]
    k = key("secured")
    with Client(address) as anonymous:
        with pytest.raises(Unauthenticated, match="authorization: Bearer"):
            anonymous.get(k)
    with Client(address, token=TOKENS["read"]) as reader:
        assert reader.get(k) is None
        with pytest.raises(PermissionDenied, match="needs the write role"):
            reader.put(k, b"v")
    with Client(address, token=TOKENS["write"]) as writer:
        writer.put(k, b"v")
        assert writer.get(k).value == b"v"
