"""The lineage chain (tasks/ops/lineage_walk.py) as aligned text for a terminal: a few dozen lines, md5s and run ids
cut to 8 characters (`--json` has them whole, and every param and metric)."""
from __future__ import annotations

import textwrap

from tasks.paths import Paths

WIDTH = 118
LABEL = 16


def _num(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{round(value, 4):g}"


def _id(value: str | None) -> str:
    return (value or "-")[:8]


def _line(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"{label:<{LABEL}}", subsequent_indent=" " * LABEL,
                         break_on_hyphens=False, break_long_words=False) or [label]


def _pack(items: list[str], first: str, rest: str, sep: str = "  ") -> list[str]:
    """Items `sep` apart after the `first` / `rest` indents, as many per line as fit: a figure never wraps away from
    its name."""
    lines, fresh = [first], True
    for item in items:
        if not fresh and len(lines[-1]) + len(sep) + len(item) > WIDTH:
            lines.append(rest)
            fresh = True
        lines[-1] += ("" if fresh else sep) + item
        fresh = False
    return lines


def _header(chain: dict) -> list[str]:
    tags, aliases = chain["tags"], " ".join(f"@{a}" for a in chain["aliases"]) or "(no alias now)"
    gates = tags.get("gates", "not recorded")
    gates += f" ({tags['failed_gates']})" if tags.get("failed_gates") else ""
    lines = [f"{chain['model']} version {chain['version']} {aliases}   ({chain['uri']})"]
    lines += _line("  registered", f"{chain['registered']} by run {_id(chain['register_run_id'])} "
                                   f"({chain['registering_stage']}); gates {gates}")
    lines += _line("  made from", f"git {_id(tags.get('git.commit'))}, params.hash {tags.get('params.hash', '-')}, "
                                  f"{len(chain['data'])} DVC outputs recorded")
    if tags.get("promoted_at"):
        trail = f"by {tags.get('promoted_by')} {tags['promoted_at']}: {tags.get('promotion_reason', '')}"
        trail += f"; previous champion v{tags['previous_champion']}" if tags.get("previous_champion") else ""
        trail += f"; rolled back from v{tags['rolled_back_from']}" if tags.get("rolled_back_from") else ""
        lines += _line("  promoted", trail)
    run = chain["pipeline_run"]
    lines += _line("  pipeline run", "none recorded" if not run else
                   f"{_id(run['run_id'])} \"{run['name']}\" {run['status']} ({run['launcher']}), "
                   f"{run['started']} → {run['ended'] or 'running'}, git {_id(run['git_commit'])}"
                   + (f", registered it as @{run['alias']}" if run.get("alias") else ""))
    return lines


def _made_in(entry: dict) -> str:
    if "run_id" not in entry:
        return "up to date; made by an earlier run not in this store"
    if entry["origin"] in ("this pipeline run", "registered the version"):
        return "this pipeline run"
    return f"earlier run {_id(entry['pipeline_run_id'])} ({entry['pipeline_run_status']})"


def _bookkeeping(path: str) -> bool:
    """A stage's results and headline files (data/stages, data/metrics): in --json, left out of the text."""
    return path.startswith((f"{Paths.stage_results}/", f"{Paths.stage_metrics}/"))


def _data(paths: dict[str, str], word: str) -> list[str]:
    items = [f"{p} {_id(m)}" for p, m in paths.items() if not _bookkeeping(p)] or ["-"]
    return [f"{word} {items[0]}"] + items[1:]


def _stage(entry: dict) -> list[str]:
    sections = sorted({k.split(".")[0] for k in entry.get("params", {})})
    params = [f"{s} ×{sum(k.startswith(s + '.') for k in entry['params'])}" for s in sections] or ["-"]
    head = (f"{entry['stage']:<12} {_id(entry.get('run_id')):<9} {entry.get('status', '-'):<9} "
            f"{_made_in(entry):<32} {_id(entry.get('git_commit')):<9} ")
    lines = _pack(params, head, " " * len(head), ", ")
    lines += _pack(_data(entry.get("inputs", {}), "in") + _data(entry["outputs"], "out"), " " * 13, " " * 16)
    if "run_id" not in entry:
        lines.append(" " * 13 + "outputs as dvc.lock had them when the version was registered")
    for key, (ours, theirs) in list(entry.get("params_not_as_pipeline_run", {}).items())[:3]:
        lines.append(f"{'':13}! param {key} = {ours} (the pipeline run's: {theirs})")
    for out, (ours, theirs) in entry.get("inputs_not_as_version", {}).items():
        lines.append(f"{'':13}! consumed {out} {_id(ours)}, the version records {_id(theirs)}")
    for seen in entry.get("outputs_contradicted_by", []):
        lines.append(f"{'':13}! its outputs were not the version's: {seen}")
    return lines


def _commits(stages: list[dict]) -> list[str]:
    """Stages that ran on different git commits (a commit made while the pipeline ran, or stages from older runs)."""
    by_commit: dict[str, list[str]] = {}
    for entry in stages:
        if entry.get("git_commit"):
            by_commit.setdefault(entry["git_commit"], []).append(entry["stage"])
    if len(by_commit) < 2:
        return []
    items = [f"{_id(c)}: {', '.join(names)};" for c, names in by_commit.items()]
    return _pack([f"the stages ran on {len(by_commit)} git commits:"] + items, f"{'git':<{LABEL}}", " " * LABEL, " ")


def _clean(counts: dict) -> list[str]:
    if not counts:
        return _line("clean", "no clean run found")
    reasons = sorted(((k.removeprefix("dropped_by_reason."), v) for k, v in counts.items()
                      if k.startswith("dropped_by_reason.")), key=lambda kv: -kv[1])
    items = [f"{_num(counts.get('rows_in', 0))} in → {_num(counts.get('rows_kept', 0))} kept, "
             f"{_num(counts.get('rows_dropped', 0))} dropped" + (":" if reasons else "")]
    items += [f"{r} {_num(n)}," for r, n in reasons]
    pii = [f"{_num(counts['rows_pii_scrubbed'])} rows PII-scrubbed"] if "rows_pii_scrubbed" in counts else []
    if reasons:
        items[-1] = items[-1][:-1] + (";" if pii else "")
    return _pack(items + pii, f"{'clean':<{LABEL}}", " " * LABEL, " ")


def _smoke_test(found: dict) -> str:
    if not found:
        return "no smoke_test run found"
    text = ", ".join(f"{k} {_num(found[k])} s" for k in ("startup_s", "smoke_latency_s") if k in found)
    text += f"; answered {found['smoke_answer']!r}" if "smoke_answer" in found else ""
    return text + "".join(f"; {k} {found[k]}" for k in ("mode", "dtype", "model_dir") if k in found)


def _check(check: dict) -> list[str]:
    rows = check["outputs"]
    bad = [r for r in rows if "problem" in r]
    summed = [r for r in bad if _bookkeeping(r["path"]) and r["problem"].startswith("dvc.lock has")]
    shown = [r for r in bad if r not in summed]
    verdict = "OK: this workspace holds the same data" if check["ok"] else \
        f"DIFFERS: this workspace differs in {len(bad)} of {len(rows)} outputs"
    lines = _line("check", f"{verdict} ({check['lock']}; cache {check['cache_dir']})")
    width = max((len(r["path"]) for r in shown), default=0)
    for row in shown:
        moved = row["dvc_lock"] and row["dvc_lock"] != row["version"]
        problem = f"dvc.lock has {_id(row['dvc_lock'])}" if moved else row["problem"]
        lines.append(f"{'':{LABEL}}{row['path']:<{width}}  version {_id(row['version'])}  {problem}")
    others = sorted({r["stage"] or r["path"] for r in summed})
    if others:
        lines += _line("", f"and the results/metrics files ({Paths.stage_results}, {Paths.stage_metrics}) of "
                           f"{', '.join(others)}")
    later = f"; not compared: {len(check['not_compared'])} outputs of the registering stage, written after the " \
        "version was tagged" if check["not_compared"] else ""
    extra = f"; in dvc.lock only: {', '.join(check['not_in_version'])}" if check["not_in_version"] else ""
    lines += _line("", f"{len(rows) - len(bad)} the same{later}{extra}")
    return lines


def render(chain: dict) -> str:
    lines = _header(chain) + ["", f"{'stage':<12} {'run':<9} {'status':<9} {'made in':<32} {'git':<9} params"]
    for entry in chain["stages"]:
        lines += _stage(entry)
    lines += _commits(chain["stages"])
    lines += [""] + _clean(chain["clean"])
    figures = [f"{k} {_num(v)}" for k, v in chain["eval"].items()] or ["no evaluate run found"]
    lines += _pack(figures, f"{'eval':<{LABEL}}", " " * LABEL)
    lines += _line("smoke test", _smoke_test(chain["smoke_test"]))
    if "check" in chain:
        lines += _check(chain["check"])
    return "\n".join(lines)
