"""Move `@champion` by hand, with an audit trail on the registry: promote a version, or roll back.

    python -m tasks promote VERSION [--force --reason "..."]
    python -m tasks rollback [--reason "..."]

MLflow keeps no alias history, so the trail is version tags on the version that becomes champion:
`previous_champion` (the one it replaced; what a rollback returns to), `promoted_at` (UTC), `promoted_by`
(register | promote | rollback) and `promotion_reason`. `promote` refuses a version whose gates failed at
registration (its `gates` tag, written by the register stage) unless `--force` comes with a `--reason`. `rollback`
points the alias at the current champion's `previous_champion` and leaves that version's own history as it was, so
repeated rollbacks walk back one champion at a time.
"""
from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from tasks import tracking
from tasks.config import load_config


class PromotionError(RuntimeError):
    pass


def audit_tags(by: str, reason: str, previous: int | None) -> dict[str, str]:
    tags = {"promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "promoted_by": by,
            "promotion_reason": reason}
    return tags | ({"previous_champion": str(previous)} if previous is not None else {})


def promote(name: str, version: int, reason: str = "", force: bool = False) -> dict:
    found = tracking.model_version(name, version)
    if found is None:
        raise PromotionError(f"{name} has no version {version}")
    current = tracking.champion(name)
    if current and current["version"] == version:
        raise PromotionError(f"version {version} is already @champion")
    if found["tags"].get("gates") != "passed" and not (force and reason):
        why = found["tags"].get("failed_gates") or found["description"] or "no gate record"
        raise PromotionError(f"version {version} did not pass its gates ({why}); promote it anyway with "
                             "--force --reason \"...\"")
    tracking.move_alias(name, version, audit_tags("promote", reason or "promoted by hand", current and current["version"]))
    return {"champion": version, "previous_champion": current and current["version"]}


def rollback(name: str, reason: str = "") -> dict:
    current = tracking.champion(name)
    if current is None:
        raise PromotionError(f"{name} has no @champion to roll back")
    tags = current["tags"]
    if "previous_champion" not in tags:
        raise PromotionError(f"version {current['version']} replaced no champion: there is nothing to roll back to")
    target = int(tags["previous_champion"])
    trail = audit_tags("rollback", reason or f"rolled back from version {current['version']}", None)
    tracking.move_alias(name, target, trail | {"rolled_back_from": str(current["version"])})
    return {"champion": target, "rolled_back_from": current["version"]}


def main_promote(argv: list[str]) -> int:
    return _main("promote", argv)


def main_rollback(argv: list[str]) -> int:
    return _main("rollback", argv)


def _main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m tasks {command}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "promote":
        parser.add_argument("version", type=int)
        parser.add_argument("--force", action="store_true", help="promote a version whose gates failed")
    parser.add_argument("--reason", default="")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    tracking.configure(cfg.tracking)
    name = cfg.tracking.registered_model
    try:
        result = (promote(name, args.version, args.reason, args.force) if command == "promote"
                  else rollback(name, args.reason))
    except PromotionError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 1
    print(f"models:/{name}@champion -> version {result['champion']} ({command}); a running `make serve` moves to it "
          f"within serve.poll_s ({cfg.serve.poll_s:.0f} s) without dropping a request")
    return 0
