"""Push the pipeline's outputs to the DVC remote, the raw corpus only when asked: `python -m tasks push
[--remote NAME] [--include-raw]`.

data/ingested is the corpus as it came in, PII and all (dvc.yaml marks it `push: false`); everything downstream of
`clean` is scrubbed. A default push sends only the scrubbed outputs, so switching the remote to S3 never ships
raw PII off the machine by accident. A clone replays the pipeline from the pushed outputs and regenerates
data/ingested from the source itself (`ingest` is deterministic) when a stage needs it. `--include-raw` is the
explicit, logged choice to copy the raw corpus too (a remote you trust with it); `dvc pull` then fetches it as usual.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pushed:
    remote: str          # its name in .dvc/config
    url: str
    files: int           # files sent this time (0: the remote had them all)
    not_pushed: tuple[str, ...]   # outputs marked push: false that were left out (raw data with PII)


def push_outputs(root: Path = Path("."), remote: str | None = None, include_raw: bool = False) -> Pushed | None:
    """`dvc push` of every cached output except those marked `push: false`; with include_raw, those too.
    None when no remote is named and .dvc/config has no default (a project made by `dvc init` alone)."""
    from dvc.exceptions import UploadError
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = remote or repo.config["core"].get("remote")
        if not name:
            return None
        url = repo.config["remote"][name]["url"]
        raw = [out for stage in repo.index.stages for out in stage.outs if out.use_cache and not out.can_push]
        files = repo.push(remote=name)
        if include_raw and raw:
            objs = set().union(*(ids for out in raw for ids in out.get_used_objs().values()))
            result = repo.cloud.push(objs, remote=name)
            if result.failed:
                raise UploadError(len(result.failed))
            files += len(result.transferred)
        return Pushed(name, url, files, () if include_raw else tuple(str(out) for out in raw))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote", help="a remote named in .dvc/config (default: core.remote)")
    parser.add_argument("--include-raw", action="store_true",
                        help="also push outputs marked push: false (data/ingested: the raw corpus with its PII)")
    args = parser.parse_args(argv)
    pushed = push_outputs(remote=args.remote, include_raw=args.include_raw)
    if pushed is None:
        raise SystemExit("no DVC remote: name one (--remote) or set a default (dvc remote add -d NAME URL)")
    print(f"pushed {pushed.files} files to {pushed.remote} ({pushed.url})")
    if pushed.not_pushed:
        print(f"not pushed (push: false, raw data with PII): {', '.join(pushed.not_pushed)}; --include-raw adds them")
    elif args.include_raw:
        print("raw outputs included (--include-raw)")
    return 0
