"""The clean stage's scratch folder: results written atomically, the folder gone after the run, a killed driver's
leftover removed by the next run on that machine while a live driver's folder stays, and a worker's cache holding
only the current run's results."""
import os
import subprocess
import sys

import numpy as np

from tasks.data import scratch


def test_a_dead_drivers_folder_is_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f"clean-{dead.stdout.strip()}-0000abcd"
    live = tmp_path / f"clean-{os.getppid()}-0000ef01"
    for folder in (leftover, live):
        (folder / "kept").mkdir(parents=True)

    work = scratch.Scratch(f"file://{tmp_path}")
    scratch.put(f"{work.url}/kept/000001", np.arange(3))

    assert not leftover.exists() and live.exists()
    assert scratch.get(f"{work.url}/kept/000001").tolist() == [0, 1, 2]
    assert [p.name for p in (tmp_path / work.url.rsplit("/", 1)[1] / "kept").iterdir()] == ["000001"]  # no temp
    first = scratch.get_cached(work.url, "kept/000001")
    assert scratch.get_cached(work.url, "kept/000001") is first             # read once per worker process
    later = scratch.Scratch(f"file://{tmp_path}")
    scratch.put(f"{later.url}/kept/000001", np.arange(2))
    assert scratch.get_cached(later.url, "kept/000001").tolist() == [0, 1]
    assert scratch.get_cached(work.url, "kept/000001") is not first         # a new run dropped the old run's
    work.remove()
    later.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
