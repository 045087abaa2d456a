"""Imported as a multiprocessing forkserver preload (tasks/data/executor.py): the forkserver, whose parent is the
stage, then dies with the stage, and FORKSERVER, which the workers it forks inherit, tells each worker whose death to
follow (tasks/data/executor.py:_die_with_forkserver). The stage names itself in STAGE_PID before the forkserver starts,
so a stage killed before this import runs is caught too (the forkserver then exits at once)."""
import os

from tasks.common.processes import die_with_parent

STAGE_PID = "TASKS_FORKSERVER_PARENT"
FORKSERVER = os.getpid()
die_with_parent(parent=int(os.environ[STAGE_PID]) if os.environ.get(STAGE_PID) else None)
