"""Result cards: one JSON file per evaluation, the unit every table and report is built from.

Part of the core layer: the engine, the attacks and the applications all write cards, so they live
below every one of them (``visec.report.leaderboard`` tabulates them).

In the spirit of RobustBench's model cards: a card says what was evaluated (method, data,
protocol, seed), what came out (metrics with confidence intervals), and how to reproduce it
(full config, code version, timings). ``visec bench`` and the leaderboard read cards only.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from visec.errors import VisecError
from visec.utils import json_safe, parse_json, short_repr

CARD_VERSION = 1
CARD_SUFFIX = ".card.json"


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """visec's version plus the git commit (and whether the tree was dirty) when run from a checkout."""
    import visec

    info: dict[str, Any] = {"visec": visec.__version__}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5)
            info["dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


@dataclass
class ResultCard:
    """One evaluation result. ``metrics`` maps a level (``frame``, ``video``, ...) to named values."""

    method: str
    train_data: str
    test_data: str
    protocol: str
    seed: int
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    selection: str = "val"
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=code_version)
    # what changes the numbers besides the seed: threads, precision, layout (visec.runtime)
    runtime: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"))
    card_version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.is_dir() or not path.name.endswith(".json"):
            path = Path(path) / f"{self.slug()}{CARD_SUFFIX}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(json_safe(self.to_dict()), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    def slug(self) -> str:
        parts = [self.method, self.protocol, self.test_data, f"seed{self.seed}"]
        return "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in p) for p in parts)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ResultCard":
        """Read a card file, checked against :class:`CardFile` (one-line errors naming the file and field)."""
        path = Path(path)
        try:
            data = parse_json(path.read_bytes())
        except OSError as exc:
            raise VisecError(f"cannot read result card {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise VisecError(f"result card {path}: {exc}") from None
        if not isinstance(data, dict):
            raise VisecError(f"result card {path}: expected a JSON object, got {type(data).__name__}")
        version = data.get("card_version")
        if type(version) is not int or version != CARD_VERSION:
            raise VisecError(f"{path}: unsupported card_version {short_repr(version)}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise VisecError(f"{path}: unknown card field(s) {short_repr(sorted(unknown), 120)}")
        try:
            CardFile.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p)[:60] for p in err["loc"])
            what = "is missing" if err["type"] == "missing" else f"{err['msg']} (got {short_repr(err.get('input'))})"
            raise VisecError(f"result card {path}: field '{field}': {what}") from None
        return cls(**data)


class CardFile(BaseModel):
    """The schema of a card file (the fields of :class:`ResultCard`), strictly typed."""

    model_config = ConfigDict(strict=True, extra="forbid")

    method: str
    train_data: str
    test_data: str
    protocol: str
    seed: int
    metrics: dict[str, Any]
    config: dict[str, Any] = {}
    timings: dict[str, float | None] = {}
    selection: str = "val"
    notes: list[str] = []
    extra: dict[str, Any] = {}
    code: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    created: str = ""
    card_version: int


def find_cards(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """All card files under the given files or folders (recursive), sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            found.update(p.rglob(f"*{CARD_SUFFIX}"))
        else:
            raise VisecError(f"no such file or folder: {p}")
    return sorted(found)


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"frame": {"auc": {"value": v, "ci": [l, h]}}}`` -> ``{"frame/auc": v, "frame/auc_ci": (l, h)}``."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict) and "value" in obj:
            flat[prefix] = obj["value"]
            if obj.get("ci") is not None:
                flat[prefix + "_ci"] = tuple(obj["ci"])
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            flat[prefix] = obj

    walk("", metrics)
    return flat
