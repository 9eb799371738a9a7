"""Host memory by kind: a file read through mmap shows in resident memory but not in private memory; an
allocation of the process's own shows in both (resources.py says why the pipeline reports both)."""

from __future__ import annotations

import mmap
import os

from arc_submit.resources import ResourceMonitor, tree_memory

MIB = 2 ** 20
SIZE = 96 * MIB


def test_a_mapped_file_is_resident_but_not_private(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(SIZE))
    rss0, private0 = tree_memory(os.getpid())
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        touched = sum(mapped[i] for i in range(0, SIZE, 4096))  # fault every page in, as a weight loader does
        rss1, private1 = tree_memory(os.getpid())
    assert touched >= 0
    assert rss1 - rss0 > 0.8 * SIZE
    assert private1 - private0 < 0.2 * SIZE
    rss2, private2 = tree_memory(os.getpid())  # unmapped: gone from resident memory too
    assert rss1 - rss2 > 0.8 * SIZE
    own = bytearray(os.urandom(SIZE))  # the process's own memory
    rss3, private3 = tree_memory(os.getpid())
    assert private3 - private2 > 0.8 * SIZE and rss3 - rss2 > 0.8 * SIZE
    del own


def test_the_monitor_keeps_private_peaks_per_tree():
    monitor = ResourceMonitor(interval=60, gpu=False)
    monitor.watch("main", os.getpid())
    sample = monitor.sample()
    assert 0 < sample.tree_private["main"] <= sample.tree_rss["main"]
    assert monitor.private_peaks_by_tree() == {"main": sample.tree_private["main"]}
