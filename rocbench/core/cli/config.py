"""YAML sweeps: one file drives any mix of suites and axes. Errors name the file, the key and the line.

    name: deepseek-r1-mxfp4
    defaults: {cuda_graph: true}          # options for every run below (a run's own keys win)
    runs:
      - suite: allgather
        each: {tp: [2, 4, 8]}             # one run per value (keys under `each` expand)
        shapes: 1x16160,64x16160
      - suite: mla
        nhead: [16, 32, 64, 128]          # a list is one comma-separated axis of one run

Keys are the command's option names with underscores (`ctx_dist`, `correctness_only`), declared once
with the command's options (rocbench.core.params): a value goes through the same parser as on the command
line and fails with the same message, plus where it is. `out`, `junit`, `json`, `resume` and `dry_run`
belong to the sweep itself, not to its runs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rocbench.core.errors import InputError, NotEnoughGpus

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


def plan(path: Path) -> tuple[str, list[PlannedRun]]:
    """Parse and check the whole file: structure, keys, and every value through its parameter's parser."""
    from rocbench.core import registry
    from rocbench.core.cli.command import param_set

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
            raise ConfigError(f"{where(path, entry_line)}: a run needs `suite:` (one of {', '.join(registry.names())})")
        suite_name = str(to_python(fields["suite"][1]))
        if suite_name not in registry.names():
            raise ConfigError(f"{where(path, fields['suite'][1].start_mark.line + 1, 'suite')}: unknown suite "
                              f"{suite_name!r} (choose from {', '.join(registry.names())})")
        params = param_set(registry.get(suite_name))
        merged = {**defaults, **{k: v for k, v in fields.items() if k not in ("suite", "each")}}
        each = mapping(fields["each"][1], path, "each") if "each" in fields else {}
        values, lines = {}, {}
        for key, (key_node, value_node) in [*merged.items(), *each.items()]:
            line = lines[key] = key_node.start_mark.line + 1
            if key not in params or params[key].hidden:
                raise ConfigError(f"{where(path, line, key)}: {suite_name} has no such option "
                                  f"(options: {', '.join(params.yaml_keys())})")
            if not params[key].in_yaml:
                raise ConfigError(f"{where(path, line, key)}: belongs to `rocbench sweep` itself, not to a run")
        for key, (_, value_node) in merged.items():
            values[key] = parsed(params[key], to_python(value_node), path, lines[key], suite_name)
        expansions = []
        for key, (_, value_node) in each.items():
            items = to_python(value_node)
            if not isinstance(items, list) or not items:
                raise ConfigError(f"{where(path, lines[key], key)}: `each:` values must be non-empty lists")
            expansions.append([(key, parsed(params[key], item, path, lines[key], suite_name)) for item in items])
        for combo in itertools.product(*expansions) if expansions else [()]:
            planned.append(PlannedRun(suite_name, {**values, **dict(combo)}, lines, entry_line))
    return name, planned


def parsed(param, raw, path: Path, line: int, suite: str):
    """A YAML value through the parameter's own parser: the command line's message, with file, line and suite."""
    try:
        return param.from_yaml(raw)
    except InputError as err:
        raise ConfigError(f"{where(path, line, param.name)}: {suite}: {err}") from None


def run_config(path: Path, out: Path, junit: Path | None = None, as_json: bool = False, dry_run: bool = False,
               write_report: bool = True, resume: Path | None = None) -> int:
    """Validate every run of the file first, then run them into one sweep directory (or finish the sweep that
    --resume names: finished runs are kept, a partial run resumed, runs never started are run)."""
    import datetime as dt
    import hashlib
    import json
    import time

    from rocbench.core import registry
    from rocbench.core.reporting import report as report_mod
    from rocbench.core.cli.command import execute
    from rocbench.core.exitcodes import Exit, worst
    from rocbench.core.reporting.junit import write_junit
    from rocbench.core.results import new_run_dir, read_meta, read_results, write_meta
    from rocbench.core.harness.sweep import check_writable, make_console
    from rich.console import Console

    from rocbench.core.harness import launcher

    if launcher.detect() is not None:
        raise InputError("rocbench sweep under torchrun or srun is not supported: launch one suite command per run "
                         "(each joins the launcher's world), or run the sweep without a launcher")
    console = make_console(to_stderr=as_json)
    name, runs = plan(path)
    text = Path(path).read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if junit is not None:
        check_writable(Path(junit))
    runnable, skipped = [], []
    for run in runs:
        try:
            execute(registry.get(run.suite), {**run.values, "dry_run": True, "out": out}, console=Console(quiet=True))
        except NotEnoughGpus as err:  # a larger machine runs it; this one skips it, visibly
            skipped.append({"suite": run.suite, "line": run.entry_line, "why": str(err), **_printable(run.values)})
            continue
        except InputError as err:  # a check across options (every single value was checked in plan)
            raise ConfigError(f"{where(path, run.entry_line)}: {run.suite}: {err}") from None
        runnable.append(run)
    planned = [{"suite": run.suite, "line": run.entry_line, "options": _printable(run.values)} for run in runnable]
    if dry_run:
        console.print(f"{path}: {len(runnable)} runs valid, {len(skipped)} skipped on this machine; nothing run (--dry-run)")
        if as_json:
            print(json.dumps({"config": str(path), "dry_run": True, "runs": planned, "skipped": skipped}, default=str))
        return 0
    if resume is not None:
        sweep_dir = Path(resume)
        meta = read_meta(sweep_dir, "--resume")
        if meta.get("config_sha256") != digest:
            raise ConfigError(f"--resume {sweep_dir}: {path} is not the config that sweep ran (it changed, or it is "
                              "another file); resume with the same file")
        if [(p["suite"], p["line"]) for p in meta.get("planned_runs", [])] != [(p["suite"], p["line"]) for p in planned]:
            raise ConfigError(f"--resume {sweep_dir}: this machine would run other runs than that sweep planned "
                              f"({len(planned)} here, {len(meta.get('planned_runs', []))} there)")
        meta.setdefault("resumed", []).append(dt.datetime.now().isoformat(timespec="seconds"))
    else:
        sweep_dir = new_run_dir(Path(out), f"sweep-{name}")
        meta = {"config": str(path), "config_sha256": digest, "name": name,
                "started": dt.datetime.now().isoformat(timespec="seconds"), "planned_runs": planned, "skipped": skipped,
                "runs": []}
    write_meta(sweep_dir, meta)
    started = time.monotonic()
    interrupted = False
    for index, run in enumerate(runnable):
        entry = meta["runs"][index] if index < len(meta["runs"]) else None
        if entry is not None and entry.get("finished"):
            continue  # kept as it is
        if entry is None:
            entry = {"suite": run.suite, "line": run.entry_line, "run_dir": None, "options": _printable(run.values)}
            meta["runs"].append(entry)

        def note_start(run_dir: Path, entry=entry) -> None:  # the sweep knows the run before its first row
            entry["run_dir"] = run_dir.name
            write_meta(sweep_dir, meta)

        console.rule(f"{run.suite} ({path}:{run.entry_line})" + (" (resumed)" if entry["run_dir"] else ""))
        values = {**run.values, "out": sweep_dir}
        if entry["run_dir"]:  # started earlier: finish it
            values["resume"] = sweep_dir / entry["run_dir"]
        outcome = execute(registry.get(run.suite), values, started=note_start, console=console)
        entry["exit_code"] = outcome.code
        entry["finished"] = outcome.code != Exit.INTERRUPTED
        write_meta(sweep_dir, meta)
        if outcome.code == Exit.INTERRUPTED:
            interrupted = True
            break
    meta["wall_s"] = round(meta.get("wall_s", 0) + time.monotonic() - started, 1)
    meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    meta["interrupted"] = interrupted
    write_meta(sweep_dir, meta)
    frames = [(r["suite"], read_results(sweep_dir / r["run_dir"])) for r in meta["runs"]
              if r.get("run_dir") and (sweep_dir / r["run_dir"] / "results.csv").exists()]
    if junit is not None:
        write_junit(Path(junit), frames)
    if write_report:
        report_path = report_mod.write_report(sweep_dir)
        console.print(f"report: {report_path}")
    for entry in skipped:
        console.print(f"[yellow]skipped[/yellow] {entry['suite']} ({path}:{entry['line']}): {entry['why']}")
    finished = [r for r in meta["runs"] if r.get("finished")]
    not_finished = len(runnable) - len(finished)
    code = worst([r.get("exit_code", Exit.INCOMPLETE) for r in meta["runs"]]
                 + ([Exit.INTERRUPTED] if interrupted else []) + ([Exit.INCOMPLETE] if not_finished else []))
    console.print(f"sweep {name}: {len(finished)} of {len(runnable)} runs finished in {meta['wall_s']} s -> {sweep_dir}: "
                  f"{code.meaning} (exit {int(code)})"
                  + (f"; finish it with: rocbench sweep {path} --resume {sweep_dir}" if not_finished else ""))
    if as_json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "exit_code": int(code), "outcome": code.meaning,
                          "wall_s": meta["wall_s"], "planned_runs": len(runnable), "finished_runs": len(finished),
                          "runs": meta["runs"], "skipped": skipped,
                          "counts": {f"{s} ({i})": report_mod.status_counts(f) for i, (s, f) in enumerate(frames)}},
                         default=str))
    return int(code)


def _printable(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
