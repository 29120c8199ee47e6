"""The grading configuration: points, per-check weights, check files and limits, in a TOML file the
instructor edits (default ``npvae/assignment/grading.toml``; ``--config FILE`` or the environment
variable NPVAE_GRADING_CONFIG choose another).

    cfg = load_config()              # GradingConfig
    cfg.points["2.2"], cfg.weight("2.2", "kl_gradient[numba]"), cfg.check_files, cfg.hidden_files
"""

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from npvae.assignment.sandbox import Limits

DEFAULT = Path(__file__).with_name("grading.toml")
ENV = "NPVAE_GRADING_CONFIG"


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("reading the grading configuration needs Python 3.11 or the tomli package "
                             "(python3 -m pip install tomli)") from None
    return tomllib


@dataclass
class GradingConfig:
    """What a grading configuration file says, with paths resolved."""

    path: Path
    points: dict
    weights: list = field(default_factory=list)          # [(pattern, weight)]
    check_files: list = field(default_factory=list)
    hidden_files: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    timeout: float = 120.0
    limits: Limits = Limits()

    def weight(self, task, check):
        """The weight of check ``check`` of ``task`` (first matching pattern, default 1)."""
        key = f"{task}::{check}"
        return next((w for pattern, w in self.weights if fnmatch.fnmatchcase(key, pattern)), 1.0)


def _number(value, what, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{path}: {what} must be a number >= 0, got {value!r}")
    return float(value)


def load_config(path=None, known_tasks=None):
    """Read and check a grading configuration; ValueError naming the file and the entry on any problem."""
    path = Path(path or os.environ.get(ENV) or DEFAULT).resolve()
    try:
        data = _toml().loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"grading configuration {path} does not exist") from None
    except ValueError as e:   # tomllib.TOMLDecodeError is a ValueError
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"files", "assignment", "points", "weights", "limits"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; expected files, assignment, points, "
                         "weights, limits")
    files = data.get("files", {})
    root = (path.parent / files.get("root", ".")).resolve()

    def paths(key):
        value = files.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path}: [files] {key} must be a list of paths")
        return [(root / v).resolve() for v in value]

    points = {str(k): _number(v, f"[points] {k}", path) for k, v in data.get("points", {}).items()}
    if known_tasks is not None:
        missing = [t for t in known_tasks if t not in points]
        extra = [t for t in points if t not in known_tasks]
        if missing or extra:
            raise ValueError(f"{path}: [points] must list every task of the registry exactly: "
                             + "; ".join(x for x in (missing and f"missing {', '.join(missing)}",
                                                     extra and f"unknown {', '.join(extra)}") if x))
    weights = [(str(k), _number(v, f"[weights] {k}", path)) for k, v in data.get("weights", {}).items()]
    tasks = data.get("assignment", {}).get("tasks", [])
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: [assignment] tasks must be a list of task ids")
    lim = data.get("limits", {})
    mb = 1 << 20
    limits = Limits(memory_bytes=int(_number(lim.get("memory_mb", 4096), "[limits] memory_mb", path) * mb),
                    file_bytes=int(_number(lim.get("file_mb", 64), "[limits] file_mb", path) * mb),
                    output_bytes=int(_number(lim.get("output_kb", 64), "[limits] output_kb", path) * 1024),
                    network=bool(lim.get("network", False)))
    return GradingConfig(path, points, weights, paths("checks"), paths("hidden"), [str(t) for t in tasks],
                         _number(lim.get("timeout", 120), "[limits] timeout", path), limits)
