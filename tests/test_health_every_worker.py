"""/healthz is 200 only while every configured worker is alive (docs/operations.md): one of two
workers down is 'degraded' (503), not ok."""
from __future__ import annotations

from types import SimpleNamespace

from cfia.serve import Node


def _node(alive, configured):
    return SimpleNamespace(pool=SimpleNamespace(alive=lambda: alive), server=object(),
                           _reader=SimpleNamespace(counts=lambda: {"queued": 0}),
                           cfg=SimpleNamespace(workers=SimpleNamespace(count=configured)))


def test_health_is_ok_only_with_every_worker_alive():
    assert Node.health(_node(2, 2))[0] is True
    ok, body = Node.health(_node(1, 2))
    assert ok is False and body["status"] == "degraded" and body["workers_alive"] == 1
