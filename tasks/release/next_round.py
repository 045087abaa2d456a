"""What each registered version keeps for the round after it, beside the checkpoint it serves:

- `adapter`: the LoRA adapter the checkpoint was merged from, with its base's md5 (tasks/common/adapter_folder.py).
  The served checkpoint may be int8 and cannot be trained; a round with sft.init_from: champion continues this.
- `held_out`: the held-out conversations it was evaluated on (sft_test.jsonl). The next round's candidate and this
  version are both scored on them: the forgetting check (gates.vs_champion.max_forgetting_ppl_ratio). The next
  round's own held-out set differs (its rows are drawn again from a grown corpus), so it cannot show forgetting.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tasks import tracking
from tasks.common.adapter_folder import write_adapter_folder
from tasks.common.modeling import is_adapter
from tasks.paths import Paths

ADAPTER, HELD_OUT = "adapter", "held_out"


def keep(adapter: Path, base: Path, held_out: Path) -> None:
    """Both on the current (register) run. A whole model (adapter: full) is not kept: it would double each version's
    size, and init_from: champion then says so."""
    with tempfile.TemporaryDirectory() as tmp:
        if is_adapter(adapter):
            write_adapter_folder(adapter, base, Path(tmp) / ADAPTER)
            tracking.log_folder(Path(tmp) / ADAPTER, ADAPTER)
        if Path(held_out).exists():   # always in the pipeline (a dep of register); a test's store may have none
            (Path(tmp) / HELD_OUT).mkdir()
            shutil.copy(held_out, Path(tmp) / HELD_OUT / Paths.sft_test.name)
            tracking.log_folder(Path(tmp) / HELD_OUT, HELD_OUT)


def fetch(found: dict, what: str, cache: Path = Paths.champion_cache) -> Path | None:
    """`what` (ADAPTER or HELD_OUT) of the registry version `found` ({version, run_id}), fetched once; None when that
    version keeps none (registered before versions kept them)."""
    try:
        return tracking.fetch_model(f"runs:/{found['run_id']}/{what}", cache / f"v{found['version']}-{what}")
    except Exception:   # noqa: BLE001 -- MLflow says "no such artifact" in several exception types
        return None
