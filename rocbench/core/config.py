"""YAML sweeps: one file drives any mix of suites and axes. Errors name the file, the key and the line.

    name: deepseek-r1-mxfp4
    defaults: {cuda_graph: true}          # options for every run below (a run's own keys win)
    runs:
      - suite: allgather
        each: {tp: [2, 4, 8]}             # one run per value (keys under `each` expand)
        shapes: 1x16160,64x16160
      - suite: mla
        nhead: [16, 32, 64, 128]          # a list is one comma-separated axis of one run

Keys are the command's option names with underscores (`ctx_dist`, `correctness_only`); `out`, `junit`,
`json` and `resume` belong to the sweep itself, not to its runs.
"""
from __future__ import annotations

import itertools
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rocbench.core.errors import InputError, NotEnoughGpus

SWEEP_ONLY_KEYS = ("out", "junit", "json", "resume", "dry_run")


@dataclass
class PlannedRun:
    suite: str
    values: dict  # option values for the suite command
    lines: dict  # option name -> line in the file (for error messages)
    entry_line: int


class ConfigError(InputError):
    pass


def where(path: Path, line: int, key: str | None = None) -> str:
    return f"{path}:{line}" + (f": key '{key}'" if key else "")


def load_nodes(path: Path):
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror}") from None
    try:
        node = yaml.compose(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise ConfigError(f"{path}:{mark.line + 1}: YAML syntax error: {err.problem}") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:1: a sweep config is a mapping with a `runs:` list")
    return node


def mapping(node, path: Path, what: str) -> dict[str, tuple[Any, Any]]:
    """{key: (key node, value node)} of a mapping node."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{where(path, node.start_mark.line + 1)}: {what} must be a mapping")
    out = {}
    for key_node, value_node in node.value:
        out[key_node.value] = (key_node, value_node)
    return out


def to_python(node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def option_value(key: str, value: Any, annotation, path: Path, line: int) -> Any:
    """A YAML value as the suite command expects it: lists become comma lists, types are checked."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    wanted = [t for t in (typing.get_args(base) or (base,)) if t is not type(None)]
    kind = wanted[0] if wanted else str
    if value is None:
        return None
    if isinstance(value, list):
        if kind is not str:
            raise ConfigError(f"{where(path, line, key)}: takes one value, not a list (use `each:` to run once per value)")
        return ",".join(str(v) for v in value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where(path, line, key)}: expected true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where(path, line, key)}: expected a number, got {value!r}")
    if kind is str:
        return str(value)
    if kind is Path:
        return Path(str(value))
    return kind(value)


def plan(path: Path) -> tuple[str, list[PlannedRun]]:
    """Parse and validate the file's structure; suite option checks happen in `validate`."""
    from rocbench.suites import SUITES, suite_module

    path = Path(path)
    top = mapping(load_nodes(path), path, "the config")
    unknown = [k for k in top if k not in ("name", "defaults", "runs")]
    if unknown:
        key_node = top[unknown[0]][0]
        raise ConfigError(f"{where(path, key_node.start_mark.line + 1, unknown[0])}: unknown top-level key (use name, defaults, runs)")
    name = str(to_python(top["name"][1])) if "name" in top else path.stem
    defaults = mapping(top["defaults"][1], path, "defaults") if "defaults" in top else {}
    if "runs" not in top or not isinstance(top["runs"][1], yaml.SequenceNode) or not top["runs"][1].value:
        line = top["runs"][0].start_mark.line + 1 if "runs" in top else 1
        raise ConfigError(f"{where(path, line, 'runs')}: needs a non-empty list of runs")
    planned = []
    for entry in top["runs"][1].value:
        entry_line = entry.start_mark.line + 1
        fields = mapping(entry, path, "a run")
        if "suite" not in fields:
            raise ConfigError(f"{where(path, entry_line)}: a run needs `suite:` (one of {', '.join(SUITES)})")
        suite = str(to_python(fields["suite"][1]))
        if suite not in SUITES:
            raise ConfigError(f"{where(path, fields['suite'][1].start_mark.line + 1, 'suite')}: unknown suite {suite!r} (choose from {', '.join(SUITES)})")
        command = suite_module(suite).COMMAND
        merged = {**defaults, **{k: v for k, v in fields.items() if k not in ("suite", "each")}}
        each = mapping(fields["each"][1], path, "each") if "each" in fields else {}
        for key, (key_node, _) in [*merged.items(), *each.items()]:
            if key in SWEEP_ONLY_KEYS:
                raise ConfigError(f"{where(path, key_node.start_mark.line + 1, key)}: belongs to `rocbench sweep` itself, not to a run")
            if key not in command.all_options:
                raise ConfigError(f"{where(path, key_node.start_mark.line + 1, key)}: {suite} has no such option "
                                  f"(options: {', '.join(k for k in command.all_options if k not in SWEEP_ONLY_KEYS + ('inject',))})")
        values, lines = {}, {}
        for key, (key_node, value_node) in merged.items():
            lines[key] = key_node.start_mark.line + 1
            values[key] = option_value(key, to_python(value_node), command.all_options[key][0], path, lines[key])
        expansions = []
        for key, (key_node, value_node) in each.items():
            lines[key] = key_node.start_mark.line + 1
            items = to_python(value_node)
            if not isinstance(items, list) or not items:
                raise ConfigError(f"{where(path, lines[key], key)}: `each:` values must be non-empty lists")
            expansions.append([(key, option_value(key, v, command.all_options[key][0], path, lines[key])) for v in items])
        for combo in itertools.product(*expansions) if expansions else [()]:
            planned.append(PlannedRun(suite, {**values, **dict(combo)}, lines, entry_line))
    return name, planned


OPTION_IN_MESSAGE = re.compile(r"(?:^|\s)--([a-z][a-z0-9-]*)")


def locate(error: InputError, run: PlannedRun, path: Path) -> ConfigError:
    """Re-word a suite's option error so it points at the key and line that caused it."""
    message = str(error)
    match = OPTION_IN_MESSAGE.search(message)
    key = match.group(1).replace("-", "_") if match else None
    line = run.lines.get(key, run.entry_line) if key else run.entry_line
    return ConfigError(f"{where(path, line, key if key in run.lines else None)}: {run.suite}: {message}")


def run_config(path: Path, out: Path, junit: Path | None = None, as_json: bool = False, dry_run: bool = False,
               write_report: bool = True) -> int:
    """Validate every run of the file first, then run them into one sweep directory."""
    import datetime as dt
    import json
    import time

    from rocbench.core import report as report_mod
    from rocbench.core.junit import write_junit
    from rocbench.core.results import new_run_dir, read_results, write_meta
    from rocbench.core.sweep import check_writable, make_console
    from rocbench.suites import suite_module

    console = make_console(to_stderr=as_json)
    name, runs = plan(path)
    if junit is not None:
        check_writable(Path(junit))
    runnable, skipped = [], []
    for run in runs:
        command = suite_module(run.suite).COMMAND
        try:
            command.execute({**run.values, "dry_run": True, "out": out})
        except NotEnoughGpus as err:  # a larger machine runs it; this one skips it, visibly
            skipped.append({"suite": run.suite, "line": run.entry_line, "why": str(err), **_printable(run.values)})
            continue
        except InputError as err:
            raise locate(err, run, path) from None
        runnable.append(run)
    if dry_run:
        console.print(f"{path}: {len(runnable)} runs valid, {len(skipped)} skipped on this machine; nothing run (--dry-run)")
        return 0
    sweep_dir = new_run_dir(Path(out), f"sweep-{name}")
    meta = {"config": str(path), "name": name, "started": dt.datetime.now().isoformat(timespec="seconds"),
            "skipped": skipped, "runs": []}
    write_meta(sweep_dir, meta)
    started = time.monotonic()
    worst = 0
    for run in runnable:
        console.rule(f"{run.suite} ({path}:{run.entry_line})")
        before = set(sweep_dir.iterdir())
        code = suite_module(run.suite).COMMAND.execute({**run.values, "out": sweep_dir})
        made = [p for p in set(sweep_dir.iterdir()) - before if p.is_dir()]
        meta["runs"].append({"suite": run.suite, "line": run.entry_line, "exit_code": code,
                             "run_dir": made[0].name if made else None, "options": _printable(run.values)})
        worst = max(worst, code)
        write_meta(sweep_dir, meta)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    write_meta(sweep_dir, meta)
    frames = [(r["suite"], read_results(sweep_dir / r["run_dir"])) for r in meta["runs"] if r["run_dir"]]
    if junit is not None:
        write_junit(Path(junit), frames)
    if write_report:
        report_path = report_mod.write_report(sweep_dir)
        console.print(f"report: {report_path}")
    for entry in skipped:
        console.print(f"[yellow]skipped[/yellow] {entry['suite']} ({path}:{entry['line']}): {entry['why']}")
    console.print(f"sweep {name}: {len(meta['runs'])} runs in {meta['wall_s']} s -> {sweep_dir}")
    if as_json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "exit_code": worst, "wall_s": meta["wall_s"],
                          "runs": meta["runs"], "skipped": skipped,
                          "counts": {s: report_mod.status_counts(f) for s, f in frames}}, default=str))
    return worst


def _printable(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
