"""`curate run`: run the stages named in a pipeline file, rerunning only what changed.

A pipeline file (TOML, in pipelines/) names an input, a workdir and each stage's options, spelled as
that stage's command-line options (`min_favs = 10` is `--min-favs 10`). Every stage runs through its
real click command, so a pipeline can do nothing a user could not do by hand, and option checks and
messages are the same.

A stage's fingerprint covers its resolved options, the fingerprints of the stages before it and,
for the first stage, the input files' names, sizes and modification times. The workdir's
pipeline.state.json records the fingerprint of every finished stage: a rerun skips a stage whose
fingerprint and outputs are unchanged, and a changed stage reruns along with every stage after it
(their fingerprints include its own).

One run at a time per workdir: `run` holds WORKDIR/.run.lock (curate.core.lock), so a second
`curate run` into the same workdir refuses with one line while the first lives (a killed run's lock
is taken over). A stage that fails stops the run with that stage's own one-line error and exit code,
named as the stage (`curate crop: error: ...`), and is not recorded as finished, so the next run
starts there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from curate import __version__
from curate.core.atomic import write_json
from curate.core.errors import CurateError, environment_failure
from curate.core.location import RemotePath, as_location, is_url
from curate.core.lock import stage_lock
from curate.core.settings import SettingError, convert, parse_assignment


class PipelineError(CurateError):
    """A pipeline file or request that cannot run: a one-line user error."""


@dataclass(frozen=True)
class StageSpec:
    """How the runner drives one stage: its command, the arguments it derives, what it produces."""

    name: str
    command: str  # "module:attribute" of the click command
    args: Callable[["Pipeline"], list[str]]  # positional arguments and path options
    outputs: Callable[["Pipeline"], list[Path]]
    inputs: Callable[["Pipeline"], list[Path]] = lambda p: []  # fingerprinted by name, size, mtime


def _input_root(p: "Pipeline") -> Path:
    return p.fetch_root if "fetch" in p.stages else p.input


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec("fetch", "curate.fetch.cli:fetch_command",
                  args=lambda p: [str(p.fetch_root), "--no-progress"] if not p.progress else [str(p.fetch_root)],
                  outputs=lambda p: [p.fetch_root / "fetch.stats.json"]),
        StageSpec("filter", "curate.filter.cli:filter_command",
                  args=lambda p: [str(_input_root(p)), "--dataset-root", str(_input_root(p)),
                                  "--out", str(p.workdir / "filtered.parquet")],
                  outputs=lambda p: [p.workdir / "filtered.parquet", p.workdir / "filtered.stats.json"],
                  inputs=lambda p: [] if "fetch" in p.stages else [p.input]),
        StageSpec("crop", "curate.crop.cli:crop_command",
                  args=lambda p: ([str(p.workdir / "filtered.parquet"), "--dataset-root", str(_input_root(p))]
                                  if "filter" in p.stages else [str(p.input)])  # no filter: a plain folder
                  + ["--out", str(p.workdir)],
                  outputs=lambda p: [p.workdir / "crops.parquet"],
                  inputs=lambda p: [] if "filter" in p.stages else [p.input]),
        StageSpec("score", "curate.score.cli:score_command",
                  args=lambda p: [str(p.workdir)],
                  outputs=lambda p: [p.workdir / "scores.parquet"]),
        StageSpec("dedup", "curate.dedup.cli:dedup_command",
                  args=lambda p: [str(p.workdir)],
                  outputs=lambda p: [p.workdir / "dedup.parquet", p.workdir / "dedup.stats.json"]),
        StageSpec("pack", "curate.dataset.pack_cli:pack_command",
                  # the dataset folder belongs to the pipeline: a rerun replaces what an earlier run packed
                  args=lambda p: [str(p.workdir), "--out", str(p.dataset_dir), "--overwrite"],
                  outputs=lambda p: [p.dataset_dir / "dataset.json"],
                  inputs=lambda p: [p.workdir / "review.sqlite"]),  # review decisions change what pack keeps
    ]
}
ORDER = list(STAGES)


@dataclass
class Pipeline:
    """A parsed pipeline file with overrides applied; paths resolved against the working directory."""

    name: str
    source: Path
    input: Path | RemotePath  # a URL (object storage) for the Beam engine: curate.core.location
    workdir: Path | RemotePath
    stages: dict[str, dict[str, Any]]  # stage -> options, in run order
    description: str = ""
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fetch_root(self) -> Path:
        return self.input

    @property
    def dataset_dir(self) -> Path:
        return self.workdir / "dataset"

    @property
    def state_file(self) -> Path:
        return self.workdir / "pipeline.state.json"


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(text: str) -> str:
    """${NAME} and ${NAME:-default} from the environment, as a shell would."""
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise PipelineError(f"the pipeline needs ${{{m.group(1)}}}: set it, e.g. {m.group(1)}=/path/to/data")
    return _VAR.sub(sub, text)


def resolve(name_or_path: str, search: Path | None = None) -> Path:
    """A pipeline given by path, or by name from pipelines/ (beside the package or in the cwd)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        return p
    folders = [search] if search else [Path.cwd() / "pipelines", Path(__file__).resolve().parents[2] / "pipelines"]
    for folder in folders:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({f.stem for folder in folders if folder.is_dir() for f in folder.glob("*.toml")})
    raise PipelineError(f"no pipeline {name_or_path!r}; known: {', '.join(known) or 'none'} (or give a .toml path)")


def load(path: Path, overrides: list[str] = (), progress: bool = True) -> Pipeline:
    """Parse a pipeline file and apply `stage.option=value` overrides."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not valid TOML ({e})") from None
    for key in ("input", "workdir"):
        if key not in doc:
            raise PipelineError(f"{path}: needs a top-level {key} = \"...\"")
    stages = {name: dict(doc[name]) for name in ORDER if isinstance(doc.get(name), dict)}
    unknown = [k for k, v in doc.items() if isinstance(v, dict) and k not in STAGES]
    if unknown:
        raise PipelineError(f"{path}: unknown stage [{unknown[0]}]; stages are {', '.join(ORDER)}")
    for item in overrides:
        try:
            key, value, _ = parse_assignment(item)
        except SettingError:
            key, value = "", None
        stage, dot, option = key.partition(".")
        if not dot or stage not in STAGES:
            raise PipelineError(f"--set {item!r}: write stage.option=value, e.g. --set filter.min_favs=20")
        stages.setdefault(stage, {})[option.replace("-", "_")] = value
    stages = {name: stages[name] for name in ORDER if name in stages}
    return Pipeline(
        name=str(doc.get("name", path.stem)), source=path, input=as_location(_expand(str(doc["input"]))),
        workdir=as_location(_expand(str(doc["workdir"]))), stages=stages, description=str(doc.get("description", "")),
        progress=progress,
    )


def _command(spec: StageSpec) -> click.Command:
    module, attr = spec.command.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise PipelineError(f"stage {spec.name!r} is not available in this version of curate") from None


def _option_type(param: click.Option) -> type | None:
    """The Python type a pipeline value for this option must convert to (None: any text will do)."""
    if param.is_flag:
        return bool
    if isinstance(param.type, (click.types.IntParamType, click.IntRange)):
        return int
    if isinstance(param.type, (click.types.FloatParamType, click.FloatRange)):
        return float
    return None


def option_args(command: click.Command, stage: str, options: dict[str, Any]) -> list[str]:
    """Options from a pipeline table as command-line arguments for the stage's command, type-checked first."""
    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    out: list[str] = []
    for key, value in options.items():
        param = params.get(key)
        if param is None:
            raise PipelineError(f"[{stage}] has no option {key!r} (see 'curate {stage} --help')")
        if (tp := _option_type(param)) is not None:
            try:
                converted = convert(f"{stage}.{key}", value, tp)
            except SettingError as e:
                raise PipelineError(str(e)) from None
            if param.is_flag:
                value = converted  # "false" is false; numbers keep their spelling (it is in the fingerprint)
        if param.is_flag:
            if value:
                out.append(param.opts[0])
            elif param.secondary_opts:
                out.append(param.secondary_opts[0])
        elif isinstance(value, list):
            out += [param.opts[0], ",".join(map(str, value))]
        else:
            out += [param.opts[0], str(value)]
    return out


def _file_facts(path: Path | RemotePath) -> list[Any]:
    if not path.exists():
        return [str(path), None]
    if path.is_dir():
        folder = path / "metadata" if (path / "metadata").is_dir() else path  # a dump: its metadata
        files = sorted(f for f in folder.rglob("*") if isinstance(f, RemotePath) or f.is_file())
    else:
        files = [path]
    return [[str(f), (st := f.stat()).st_size, st.st_mtime_ns] for f in files]


def read_state(p: Pipeline) -> dict[str, Any]:
    """The workdir's record of finished stages ({} before the first run)."""
    if not p.state_file.exists():
        return {}
    try:
        state = json.loads(p.state_file.read_bytes())
    except ValueError:
        state = None
    if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
        raise PipelineError(f"{p.state_file} is not a pipeline state file; delete it to rerun every stage")
    return state


def plan(p: Pipeline, start: str | None = None, stop: str | None = None) -> list[dict[str, Any]]:
    """What `run` would do, stage by stage: action ('run' or 'skip'), why, and the argv."""
    for name in (start, stop):
        if name is not None and name not in p.stages:
            raise PipelineError(f"{name!r} is not a stage of {p.name} (it has: {', '.join(p.stages)})")
    state = read_state(p)
    names = list(p.stages)
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    steps, upstream, changed = [], "", False
    for i, name in enumerate(names):
        spec = STAGES[name]
        argv = spec.args(p) + option_args(_command(spec), name, p.stages[name])
        facts = [_file_facts(f) for f in spec.inputs(p)]
        fingerprint = hashlib.sha256(json.dumps([name, argv, facts, upstream, __version__]).encode()).hexdigest()[:16]
        upstream = fingerprint
        recorded = state.get(name, {}).get("fingerprint")
        if i < first or i > last:
            action, why = "skip", "not selected"
        elif i == first and start:
            action, why = "run", "--from"
        elif recorded is None:
            action, why = "run", "not run yet"
        elif recorded != fingerprint:
            action, why = "run", "inputs or options changed" if not changed else "an earlier stage reran"
        elif not all(o.exists() for o in spec.outputs(p)):
            action, why = "run", "outputs missing"
        else:
            action, why = "skip", "unchanged"
        changed = changed or action == "run"
        steps.append({"stage": name, "action": action, "why": why, "argv": argv, "fingerprint": fingerprint})
    return steps


def check_engine(p: Pipeline, engine: Any = None) -> None:
    """PipelineError (one line) when the pipeline's input or workdir is a URL and the engine is local."""
    remote = next((str(x) for x in (p.input, p.workdir) if is_url(x)), None)
    if remote and (engine is None or engine.name != "beam"):
        raise PipelineError(f"{remote} is on object storage, which only the Beam engine reaches: "
                            f"curate run {p.source} --engine beam")


def run(p: Pipeline, start: str | None = None, stop: str | None = None,
        echo: Callable[[str], None] = print, engine: Any = None) -> list[dict[str, Any]]:
    """Print the plan, then run the stages that need it, recording each finished one.

    Holds the workdir's run lock throughout (LockedError if another live run has it). `engine`
    (curate.core.engine) does the stages' work; None: the local process pool."""
    check_engine(p, engine)
    with contextlib.ExitStack() as held:
        try:
            p.workdir.mkdir(parents=True, exist_ok=True)
            if not is_url(p.workdir):  # an object store has no locks: one run per workdir is the user's to keep
                held.enter_context(stage_lock(p.workdir / ".run.lock", f"the pipeline workdir {p.workdir}"))
        except OSError as e:  # a read-only or full workdir: name it, not the lock file inside it
            raise environment_failure(e, p.workdir) from None
        return _run_locked(p, start, stop, echo, engine)


def _run_stage(stage: str, argv: list[str], engine: Any = None) -> None:
    """One stage through its click command; its failure re-raised as a one-line error naming the stage."""
    where = f"curate {stage}"
    try:
        rv = _command(STAGES[stage]).main(args=argv, prog_name=where, standalone_mode=False, obj=engine)
    except CurateError as e:
        e.command_path = where  # name the stage that failed, not `run`
        raise
    except click.UsageError:
        raise  # its context is the stage's: the CLI already names `curate <stage>` and its --help
    except click.ClickException as e:
        failure = PipelineError(e.format_message())
        failure.exit_code, failure.command_path = e.exit_code, where
        raise failure from None
    except OSError as e:  # what the CLI does for a stage run on its own: the path and the cause, one line
        if os.environ.get("CURATE_DEBUG"):
            raise
        failure = environment_failure(e)
        failure.command_path = where
        raise failure from None
    if isinstance(rv, int) and rv != 0:  # a stage that ended itself with an exit code (ctx.exit)
        failure = PipelineError(f"the stage stopped with exit code {rv}; the pipeline stops here")
        failure.exit_code, failure.command_path = rv, where
        raise failure


def _run_locked(p: Pipeline, start: str | None, stop: str | None,
                echo: Callable[[str], None], engine: Any = None) -> list[dict[str, Any]]:
    steps = plan(p, start, stop)
    on = f", on {engine.name} ({engine.describe()})" if engine is not None and engine.name != "local" else ""
    echo(f"pipeline {p.name} ({p.source}): input {p.input}, workdir {p.workdir}{on}")
    for s in steps:
        echo(f"  {s['action']:4s} {s['stage']:7s} {s['why']:26s} curate {s['stage']} {' '.join(s['argv'])}")
    if not any(s["action"] == "run" for s in steps):
        echo("nothing to do: every stage is up to date")
        if not is_url(p.workdir) and not (p.workdir / REPORT).exists():
            write_report(p, echo)
        elif not is_url(p.workdir):
            echo(f"report: {p.workdir / REPORT}")
        return steps
    state = read_state(p)
    for s in steps:
        if s["action"] != "run":
            continue
        state.pop(s["stage"], None)  # not finished until it says so
        write_json(p.state_file, state)
        echo(f"== {s['stage']}")
        t0 = time.perf_counter()
        _run_stage(s["stage"], s["argv"], engine)
        state[s["stage"]] = {"fingerprint": s["fingerprint"], "seconds": round(time.perf_counter() - t0, 2),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(p.state_file, state)
    write_report(p, echo)
    return steps


REPORT = "report.html"


def write_report(p: Pipeline, echo: Callable[[str], None] = print) -> None:
    """The workdir's report.html (curate report), rewritten after every run that did something."""
    if is_url(p.workdir):
        echo(f"report: {p.workdir} is on object storage; copy it down (gsutil -m cp -r, aws s3 sync) "
             "and run `curate report DIR` there")
        return
    from curate.report.build import build

    path = build(p.workdir, p.workdir / REPORT)
    echo(f"report: {path} (open it in a browser: the funnel, plots and sample grids of this run)")
