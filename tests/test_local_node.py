"""LocalNode, the helper that runs `cfia serve` for the demo, the harnesses and the benches."""
from __future__ import annotations

from cfia.local_node import LocalNode


def test_a_relative_workdir_starts_the_node(tmp_path, monkeypatch):
    """serve runs with the workdir as its cwd: a relative workdir was resolved twice, so the
    node could not read its own config and the start was retried as a lost port race."""
    monkeypatch.chdir(tmp_path)
    node = LocalNode("relative-node", overrides={"workers": {"processor": "cfia.bench.processors:blob"}})
    try:
        info = node.start(timeout=60)
        assert info["dicom_port"] > 0 and node.workdir == tmp_path / "relative-node"
    finally:
        assert node.stop() == 0
