"""Proofs and checkpoints over HTTP, checked with the pure verifiers and an independent
reference tree, on SQLite and PostgreSQL.

Sizes and roots are never taken from the answer being checked: leaf hashes come from the
entries (``GET /v1/ledger/entries``), roots from RFC 9162's recursion over them, and
checkpoints are opened with the key ``GET /v1/checkpoints/key`` serves.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.transparency.bundle import Bundle, verify_bundle
from ledger.transparency.checkpoint import Checkpoint, open_checkpoint
from ledger.transparency.note import verifier_from_key
from ledger.transparency.proof import ProofError, verify_consistency, verify_inclusion
from ledger.transparency.tree import root_of
from tests.support import auth_headers, make_event, provision_key

FAST_MS = 200  # checkpoints within 0.2 s here, so the tests need not wait long


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, key_file=tmp_path / "keys.json",
                    checkpoint_interval_ms=FAST_MS)


def post(client: TestClient, n: int) -> list[dict[str, Any]]:
    response = client.post("/v1/events/batch", json={"events": [make_event() for _ in range(n)]})
    assert response.status_code == 201, response.text
    return response.json()["receipts"]


def leaves(client: TestClient) -> list[bytes]:
    body = client.get("/v1/ledger/entries", params={"limit": 10_000}).json()
    return [bytes.fromhex(e["hash"]) for e in body["entries"]]


def wait_for_checkpoint(client: TestClient, size: int, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/v1/checkpoints/latest")
        if response.status_code == 200 and Checkpoint.parse(
                response.text.split("\n\n")[0] + "\n").size >= size:
            return response.text
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint covering {size} entries within {timeout}s")


def log_key(client: TestClient) -> str:
    response = client.get("/v1/checkpoints/key")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text.strip()


@pytest.fixture
def filled(client: TestClient) -> Iterator[tuple[TestClient, list[bytes]]]:
    rng = random.Random(9)
    for _ in range(6):
        post(client, rng.randint(1, 25))
    yield client, leaves(client)


def test_inclusion_proofs_verify_for_every_seq_and_random_sizes(
    filled: tuple[TestClient, list[bytes]],
) -> None:
    client, hashes = filled
    n = len(hashes)
    rng = random.Random(1)
    for seq in range(1, n + 1):
        size = rng.randint(seq, n)
        body = client.get("/v1/proofs/inclusion", params={"seq": seq, "tree_size": size}).json()
        assert (body["seq"], body["leaf_index"], body["tree_size"]) == (seq, seq - 1, size)
        assert body["leaf_hash"] == hashes[seq - 1].hex()
        root = root_of(hashes[:size])
        assert body["root"] == root.hex()
        proof = [bytes.fromhex(h) for h in body["proof"]]
        verify_inclusion(seq - 1, size, hashes[seq - 1], proof, root)
        if size > 1:  # the check can fail: another entry's hash does not fit the path
            other = hashes[seq % size]
            with pytest.raises(ProofError):
                verify_inclusion(seq - 1, size, other, proof, root)
    # tree_size defaults to the head
    body = client.get("/v1/proofs/inclusion", params={"seq": 1}).json()
    assert body["tree_size"] == n and body["root"] == root_of(hashes).hex()


def test_consistency_proofs_verify_between_random_sizes(
    filled: tuple[TestClient, list[bytes]],
) -> None:
    client, hashes = filled
    n = len(hashes)
    rng = random.Random(2)
    pairs = [(1, n), (n, n), (n - 1, n)] + [
        tuple(sorted((rng.randint(1, n), rng.randint(1, n)))) for _ in range(40)]
    for first, second in pairs:
        body = client.get("/v1/proofs/consistency",
                          params={"first": first, "second": second}).json()
        old, new = root_of(hashes[:first]), root_of(hashes[:second])
        assert (body["first_root"], body["second_root"]) == (old.hex(), new.hex())
        proof = [bytes.fromhex(h) for h in body["proof"]]
        verify_consistency(first, second, old, new, proof)
        if first < second:
            with pytest.raises(ProofError):
                verify_consistency(first, second, root_of(hashes[1 : first + 1]), new, proof)
    body = client.get("/v1/proofs/consistency", params={"first": 2}).json()
    assert body["second"] == n


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/proofs/inclusion", {"seq": 0}, "seq"),
    ("/v1/proofs/inclusion", {"seq": -3}, "seq"),
    ("/v1/proofs/inclusion", {"seq": 99}, "seq"),                      # beyond the head
    ("/v1/proofs/inclusion", {"seq": 5, "tree_size": 4}, "seq"),       # seq > tree_size
    ("/v1/proofs/inclusion", {"seq": 1, "tree_size": 0}, "tree_size"),
    ("/v1/proofs/inclusion", {"seq": 1, "tree_size": 11}, "tree_size"),  # > the head
    ("/v1/proofs/inclusion", {"seq": "x"}, "seq"),
    ("/v1/proofs/inclusion", {}, "seq"),
    ("/v1/proofs/consistency", {"first": 0}, "first"),
    ("/v1/proofs/consistency", {"first": 0, "second": 5}, "first"),
    ("/v1/proofs/consistency", {"first": 6, "second": 5}, "first"),    # first > second
    ("/v1/proofs/consistency", {"first": 1, "second": 11}, "second"),  # > the head
    ("/v1/proofs/consistency", {"first": 11}, "first"),                # > the head
    ("/v1/proofs/bundle", {"seq": 0}, "seq"),
    ("/v1/proofs/bundle", {"seq": 1, "size": 11}, "size"),             # beyond the head
    ("/v1/proofs/bundle", {"seq": 1, "size": 0}, "size"),
    ("/v1/proofs/bundle", {"seq": 9, "size": 5}, "seq"),               # seq > size
    ("/v1/proofs/bundle", {"seq": 1, "size": "x"}, "size"),
])
def test_out_of_range_requests_are_400s_naming_the_parameter(
    client: TestClient, path: str, params: dict[str, Any], field: str,
) -> None:
    post(client, 10)
    wait_for_checkpoint(client, 10)
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["fields"] == [field]


def test_checkpoints_are_signed_consistent_and_served_by_size(client: TestClient) -> None:
    assert client.get("/v1/checkpoints/latest").status_code == 404
    key = log_key(client)
    verifier = verifier_from_key(key)
    assert key.startswith(verifier.name + "+") and verifier.name.endswith("/default")
    seen: list[Checkpoint] = []
    for n in (3, 9, 1, 20):
        post(client, n)
        note = wait_for_checkpoint(client, sum((3, 9, 1, 20)[: len(seen) + 1]))
        checkpoint = open_checkpoint(note, verifier)
        assert checkpoint.root == root_of(leaves(client)[: checkpoint.size])
        assert client.get(f"/v1/checkpoints/{checkpoint.size}").text == note
        seen.append(checkpoint)
    for old, new in itertools.pairwise(seen):
        body = client.get("/v1/proofs/consistency",
                          params={"first": old.size, "second": new.size}).json()
        verify_consistency(old.size, new.size, old.root, new.root,
                           [bytes.fromhex(h) for h in body["proof"]])
    missing = client.get(f"/v1/checkpoints/{seen[-1].size - 1}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_checkpoint"
    keys = client.get("/v1/checkpoints/keys").json()["keys"]
    assert [(k["key"], k["active"], k["signing"]) for k in keys] == [(key, True, True)]


HANG = 60.0  # seconds: far beyond any interval, only a stopped signer reaches it


def test_a_checkpoint_covers_every_append(database_url: str, tmp_path: Path) -> None:
    """With the default interval (1 s), appends at any phase of the signer's cycle are each
    covered by a signed checkpoint. The deadline only catches a signer that stopped; how
    soon a checkpoint follows is a figure for benchmarks/transparency.py, not a test."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    assert settings.checkpoint_interval_ms == 1000
    api_key = provision_key(database_url)
    with TestClient(create_app(settings, configure_logs=False),
                    headers=auth_headers(api_key)) as client:
        for round_ in range(4):
            receipt = post(client, 1 + round_)[-1]
            acknowledged = time.monotonic()
            while True:
                response = client.get("/v1/checkpoints/latest")
                if response.status_code == 200 and int(response.text.split("\n")[1]) >= \
                        receipt["seq"]:
                    break
                assert time.monotonic() - acknowledged < HANG, "no checkpoint: signer hung"
                time.sleep(0.01)
            time.sleep(random.random() * 0.3)  # appends at any phase of the poll


def test_a_bundle_verifies_with_the_log_key_alone(client: TestClient) -> None:
    receipts = post(client, 13)
    wait_for_checkpoint(client, 13)
    key = log_key(client)
    for receipt in receipts:
        response = client.get("/v1/proofs/bundle", params={"seq": receipt["seq"]})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        checkpoint = verify_bundle(response.text, bytes.fromhex(receipt["hash"]), key)
        assert checkpoint.size == 13
        assert Bundle.parse(response.text).index == receipt["seq"] - 1
    other = bytes.fromhex(receipts[0]["hash"])
    with pytest.raises(ProofError):
        verify_bundle(client.get("/v1/proofs/bundle", params={"seq": 2}).text, other, key)


def test_a_bundle_waits_for_a_checkpoint_covering_the_entry(settings: Settings) -> None:
    slow = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 60_000})
    api_key = provision_key(settings.database_url)
    with TestClient(create_app(slow, configure_logs=False),
                    headers=auth_headers(api_key)) as client:
        receipt = post(client, 1)[0]
        response = client.get("/v1/proofs/bundle", params={"seq": receipt["seq"]})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_checkpointed"
        assert response.headers["retry-after"] == "1"
    # The service signs what it committed last when it stops.
    with TestClient(create_app(slow, configure_logs=False),
                    headers=auth_headers(api_key)) as client:
        response = client.get("/v1/proofs/bundle", params={"seq": receipt["seq"]})
        assert response.status_code == 200, response.text
        verify_bundle(response.text, bytes.fromhex(receipt["hash"]), log_key(client))


def test_a_bundle_at_a_size_never_signed_is_a_404_not_checkpointed(settings: Settings) -> None:
    """A size the ledger reached but no checkpoint was signed at is a missing resource (as
    ``/v1/checkpoints/{size}`` says), not a bad request, and waiting will not bring it."""
    slow = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 60_000})
    api_key = provision_key(settings.database_url)
    with TestClient(create_app(slow, configure_logs=False),
                    headers=auth_headers(api_key)) as client:
        post(client, 5)
    # Stopping signed the head (5) and nothing in between.
    with TestClient(create_app(slow, configure_logs=False),
                    headers=auth_headers(api_key)) as client:
        assert client.get("/v1/checkpoints/3").status_code == 404
        response = client.get("/v1/proofs/bundle", params={"seq": 2, "size": 3})
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert (error["code"], error["fields"]) == ("not_checkpointed", ["size"])
        assert "retry-after" not in response.headers
        signed = client.get("/v1/proofs/bundle", params={"seq": 2, "size": 5})
        assert signed.status_code == 200, signed.text
        assert Bundle.parse(signed.text).index == 1


def test_verifiers_may_read_proofs_and_ingest_keys_may_not(client: TestClient,
                                                          settings: Settings) -> None:
    post(client, 4)
    wait_for_checkpoint(client, 4)
    paths = [("/v1/checkpoints/latest", {}), ("/v1/checkpoints/4", {}),
             ("/v1/checkpoints/key", {}), ("/v1/checkpoints/keys", {}),
             ("/v1/proofs/inclusion", {"seq": 2}), ("/v1/proofs/consistency", {"first": 2}),
             ("/v1/proofs/bundle", {"seq": 2})]
    verifier = auth_headers(provision_key(settings.database_url, roles=["verifier"]))
    ingest = auth_headers(provision_key(settings.database_url, roles=["ingest"]))
    for path, params in paths:
        allowed = client.get(path, params=params, headers=verifier)
        assert allowed.status_code == 200, (path, allowed.text)
        assert "MRN-" not in allowed.text  # hashes, sizes, keys: never PHI
        assert client.get(path, params=params, headers=ingest).status_code == 403, path
        assert client.get(path, params=params, headers={"Authorization": ""}
                          ).status_code == 401, path
