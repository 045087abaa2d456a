"""`sft.init_from: champion`: a training round continues the model being served instead of starting from the base.

Why the adapter and not the served checkpoint: the registry serves a quantized (int8) or adapter folder, and int8
weights cannot be trained. Every registered version also keeps the LoRA adapter it was merged from
(tasks/release/next_round.py), so a round fetches the champion's adapter and trains
it further on the new rows plus the replay share of the old ones (the sources' `weight`s in `ingest.sources`). The
preference stage continues the SFT adapter as always, so it continues the champion too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks import tracking
from tasks.common.adapter_folder import base_of
from tasks.common.errors import UserError
from tasks.paths import Paths
from tasks.release import next_round


@dataclass(frozen=True)
class Start:
    """Where a round starts: an adapter to continue and the registry version it came from."""
    adapter: Path
    version: int


def champion_start(model_name: str, base_model: Path = Paths.base_model,
                   cache: Path = Paths.champion_cache) -> Start | None:
    """The @champion's adapter, fetched once into .cache/champion; None before the first champion (round one
    starts from the base, and its results say so)."""
    found = tracking.champion(model_name)
    if found is None:
        return None
    folder = next_round.fetch(found, next_round.ADAPTER, cache)
    if folder is None or not (folder / "adapter_config.json").exists():
        raise UserError(f"sft.init_from is 'champion', but version {found['version']} of {model_name!r} keeps no LoRA "
                        "adapter (registered before versions kept theirs, or trained with adapter: full): set "
                        "init_from: base for this round")
    if Path(base_of(folder)).resolve() != Path(base_model).resolve():
        raise UserError(f"the champion's adapter was trained on {base_of(folder)}, this round trains on {base_model}")
    return Start(folder, found["version"])
