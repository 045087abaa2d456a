"""Which conversations are held out for evaluation: by a hash of the id, so the split is stable as the corpus grows.

The source prefix ingest gives ids when there is more than one source (`<source>/<id>`) is not hashed: adding a
source (a feedback round beside the corpus) must not move the first source's rows between train and test, or the
champion's held-out rows would become the next round's training rows and the forgetting check would measure nothing.
Chunks of one conversation (ShareGPT's `abc_0`, `abc_1`, ...) share a side: split apart, a test chunk re-pasted in
its training sibling would leak (decontamination found 19 such pairs among 46 flags). Shared by datasets (which
builds the split) and clean (which decontaminates the training side against it).
"""
from __future__ import annotations

import hashlib
import re

_CHUNK_SUFFIX = re.compile(r"_\d+$")


def in_test_split(conv_id: str, fraction: float) -> bool:
    group = _CHUNK_SUFFIX.sub("", conv_id.split("/", 1)[-1])
    return int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction
