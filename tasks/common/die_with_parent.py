"""Imported as a multiprocessing forkserver preload (tasks/data/executor.py): the forkserver, whose parent is the
stage, then dies with the stage, and FORKSERVER, which the workers it forks inherit, tells each worker whose death to
follow (tasks/data/executor.py:_die_with_forkserver). Should the stage die before this runs, the forkserver still
exits on its own (CPython's alive pipe), and its workers with it."""
import os

from tasks.common.processes import die_with_parent

FORKSERVER = os.getpid()
die_with_parent()
