"""A build worker's kept build tree has a bounded lifetime: removed when its process ends (Celery's
worker_process_shutdown) or after it idled, and one a killed worker left is removed by the next."""

from __future__ import annotations

import subprocess
import tempfile

from celery.signals import worker_process_shutdown

from kabigate.workers import gating


def test_a_kept_tree_goes_with_its_worker_process_and_a_dead_ones_is_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f"{gating.TREE_PREFIX}{dead.pid}-x"
    (orphan / "tree").mkdir(parents=True)
    alive = tmp_path / f"{gating.TREE_PREFIX}1-x"  # init's: a live process, left alone
    alive.mkdir()
    gating._remove_orphans(tmp_path)
    assert (orphan.exists(), alive.exists()) == (False, True)

    kept = tempfile.TemporaryDirectory(dir=tmp_path)
    gating._TREE[0] = kept, None
    worker_process_shutdown.send(sender=None)
    assert gating._TREE == {} and not (tmp_path / kept.name).exists()
