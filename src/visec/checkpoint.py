"""Checkpoints: safetensors weights + a JSON sidecar; safe loading of user-supplied weight files.

``save_checkpoint(model, path, meta)`` writes ``path`` (``.safetensors``) and ``path`` with
``.json`` (config, code version, metrics, ...). ``load_state_dict_file`` reads safetensors or a
PyTorch file with ``weights_only=True`` only; anything else is refused with a one-line reason.
Loading into a model is always strict, with an explicit list of what did not match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from visec.errors import CheckpointError
from visec.utils import parse_json, short_repr


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write the model's state dict as safetensors and ``meta`` as the JSON sidecar (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "producer": "visec"})
    os.replace(tmp, path)
    side = sidecar_path(path)
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(dict(meta), indent=2, default=str) + "\n")
    os.replace(tmp_side, side)
    return path


class Sidecar(BaseModel):
    """The schema of a checkpoint's JSON sidecar: the fields visec reads back, strictly typed
    (``null`` where a writer had no value); other fields (a pre-training's settings...) pass."""

    model_config = ConfigDict(strict=True, extra="allow")

    config: dict[str, Any] | None = None
    code: dict[str, Any] | None = None
    epoch: int | None = Field(None, ge=0)
    global_step: int | None = Field(None, ge=0)
    selection: str | None = None
    metrics: dict[str, float | None] | None = None
    runtime: dict[str, Any] | None = None
    saved: str | None = None
    val_eer_threshold: float | None = None


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of the weights at ``path`` as a dict, checked against :class:`Sidecar`."""
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path}: no sidecar {side.name} beside the weights (config and "
                              f"metrics are read from it)")
    try:
        data = parse_json(side.read_bytes())
    except ValueError as exc:
        raise CheckpointError(f"{side}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{side}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{side}: expected a JSON object (the checkpoint's metadata), got "
                              f"{type(data).__name__}")
    try:
        Sidecar.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p)[:60] for p in err["loc"])
        raise CheckpointError(f"{side}: field '{field}': {err['msg']} (got "
                              f"{short_repr(err.get('input'))})") from None
    return data


def load_state_dict_file(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a PyTorch file loadable with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path} (visec never downloads weights: "
                              f"download the file yourself and give its local path)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} file is empty: {path}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, unsupported globals, corrupt zip...
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: neither safetensors nor a PyTorch file loadable with "
                              f"weights_only=True ({reason})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "netG_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"{path}: holds no tensors (expected a state dict)")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
              key_map: Mapping[str, str] | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Strictly load ``state`` into ``model``; ``key_map`` renames prefixes, ``ignore`` drops prefixes.

    A mismatch raises :class:`CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    fixed: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for old, new in (key_map or {}).items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        if not any(k.startswith(p) for p in ignore):
            fixed[k] = v
    own = model.state_dict()
    missing = [k for k in own if k not in fixed and not any(k.startswith(p) for p in ignore)]
    unexpected = [k for k in fixed if k not in own]
    shape = [f"{k} {tuple(fixed[k].shape)}!={tuple(own[k].shape)}" for k in fixed
             if k in own and fixed[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shape)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(fixed, strict=not ignore)


def _looks_like_safetensors(head: bytes) -> bool:
    # safetensors starts with an 8-byte little-endian header length followed by '{'
    return len(head) >= 9 and head[8:9] == b"{"
