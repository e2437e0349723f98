"""Metrics of face identity attacks (Adv-Diffusion and the AMT-GAN protocol it follows).

Attack success at a false-accept rate
-------------------------------------
A targeted impersonation succeeds when the victim face-recognition model scores the adversarial
face against the target face **strictly above** a threshold ``tau``:
``cos(f(x_adv), f(x_tgt)) > tau``. ``tau`` is the threshold at which the victim falsely accepts a
fraction ``FAR`` of impostor pairs (two different people). Two sources of ``tau``:

* :data:`PAPER_THRESHOLDS`: the AMT-GAN table that Adv-Diffusion reuses (victim -> FAR -> tau), for
  numbers comparable with the papers;
* :func:`far_thresholds` on the victim's own impostor scores (:func:`impostor_scores` of embeddings
  of distinct identities), for a victim or a data set the table does not cover.

:func:`far_thresholds` defines ``tau`` exactly: with ``M`` impostor scores sorted in decreasing
order ``d_1 >= d_2 >= ... >= d_M`` and ``k = floor(FAR * M)``, ``tau = d_(k+1)``. At most ``k``
scores lie strictly above it, so the observed FAR is ``<= FAR``, and it is the lowest threshold
with that property: any lower one accepts ``d_(k+1)`` too, i.e. ``k + 1`` impostors. Without ties
the observed FAR is exactly ``k / M``; scores tied with ``d_(k+1)`` make it lower (the data cannot
separate them). A FAR needs ``M >= ceil(1 / FAR)`` scores (``k >= 1``); with fewer, the threshold
would be the largest score and say nothing about the FAR, so it is refused.

:func:`attack_success_rate` reports, per FAR, the success rate with a Wilson 95 % interval.

Pairing
-------
Source ``i`` is attacked towards target ``i``. :func:`pair_files` pairs two folders by **natural
order** (``2.png`` before ``10.png``: the original evaluation sorted one side as strings and the
other numerically, which misaligns pairs past 10 images), target ``i`` being
``targets[i % n_targets]``, or by an explicit index file. The attack records what it wrote with
:func:`write_pairs` (columns ``index, source, target, adversarial``) and the evaluation reads that
file with :func:`read_pairs`: it never pairs by sorting names again.

Image quality
-------------
:func:`pair_quality`: per-pair PSNR and SSIM of each adversarial image against its source
(:func:`visec.metrics.sequence.psnr` capped at 100 dB, :func:`visec.metrics.sequence.ssim`: 11x11
Gaussian window; the original ``psnr_ssim.py`` used scikit-image's default 7x7 uniform window, so
SSIM values differ slightly from the paper's). :func:`fid`: the Frechet distance between Inception
pool features of two image sets. The Inception network is torchvision's ``inception_v3`` loaded
from a local file the user provides (nothing is downloaded); with torchvision's ImageNet weights the
values are close to, but not the same as, ``pytorch-fid`` (which uses the TensorFlow FID weights).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.errors import CheckpointError, DataError, MetricError
from visec.metrics.multiclass import wilson_interval
from visec.metrics.sequence import _as_images, psnr, ssim

__all__ = [
    "PAPER_THRESHOLDS",
    "FARS",
    "IMAGE_SUFFIXES",
    "impostor_scores",
    "far_thresholds",
    "attack_success_rate",
    "list_images",
    "pair_files",
    "write_pairs",
    "read_pairs",
    "pair_quality",
    "frechet_distance",
    "gaussian_stats",
    "fid_from_features",
    "inception_features",
    "fid",
]

#: Cosine thresholds of the victim models at FAR 0.1 / 0.01 / 0.001 (AMT-GAN's table, used by
#: Adv-Diffusion). Input sizes: 112 px for ir152, irse50 and mobileface; 160 px for facenet.
PAPER_THRESHOLDS: dict[str, dict[float, float]] = {
    "ir152": {0.1: 0.094632, 0.01: 0.166788, 0.001: 0.227922},
    "irse50": {0.1: 0.144840, 0.01: 0.241045, 0.001: 0.312703},
    "facenet": {0.1: 0.256587, 0.01: 0.409131, 0.001: 0.591191},
    "mobileface": {0.1: 0.183635, 0.01: 0.301611, 0.001: 0.380878},
}
FARS: tuple[float, ...] = (0.1, 0.01, 0.001)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PAIR_COLUMNS = ("index", "source", "target", "adversarial")
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_ROW_BLOCK = 1024  # rows of one block of the impostor similarity matrix
_EPS = 1e-9


# --------------------------------------------------------------------------- input helpers
def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        return x.detach().cpu().numpy()
    return x


def _numeric(x: Any, name: str, shape: str) -> np.ndarray:
    """``x`` (array, list or tensor) as a numeric array; one line naming ``name`` otherwise."""
    try:
        arr = np.asarray(_to_numpy(x))
    except Exception as exc:
        raise MetricError(f"{name} cannot be read as {shape}: {exc}") from None
    if arr.dtype == object or arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating)
                                                        or np.issubdtype(arr.dtype, np.integer)):
        raise MetricError(f"{name} must be {shape} of numbers, got dtype {arr.dtype}")
    return arr


def _as_vector(x: Any, name: str) -> np.ndarray:
    arr = _numeric(x, name, "a 1-D array")
    if arr.ndim != 1:
        raise MetricError(f"{name} must be 1-D (one score per pair), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MetricError(f"{name} is empty")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise MetricError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


def _check_far(far: Any) -> float:
    if isinstance(far, bool) or not isinstance(far, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(far) < 1.0:
        raise MetricError(f"a FAR must be a number strictly between 0 and 1, got {far!r}")
    return float(far)


# --------------------------------------------------------------------------- scores and ASR
def impostor_scores(embeddings: Any) -> np.ndarray:
    """Cosine similarity of every unordered pair ``i < j`` of rows: ``float64 (N*(N-1)/2,)`` in
    row-major order (``(0,1), (0,2), ..., (1,2), ...``). Rows are L2-normalised here; a row of
    zeros is refused. Give embeddings of *different* identities: every pair is an impostor pair."""
    X = _numeric(embeddings, "embeddings", "an (N, D) array")
    if X.ndim != 2 or X.shape[1] == 0:
        raise MetricError(f"embeddings must have shape (N, D), got {X.shape}")
    if X.shape[0] < 2:
        raise MetricError(f"impostor scores need at least 2 embeddings, got {X.shape[0]}")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise MetricError("embeddings hold non-finite values (NaN or inf)")
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise MetricError(f"embedding row {int(np.argmax(norms == 0))} is all zeros: it has no direction")
    X = X / norms[:, None]
    n = X.shape[0]
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for a in range(0, n - 1, _ROW_BLOCK):
        b = min(a + _ROW_BLOCK, n - 1)
        S = X[a:b] @ X[a:].T  # rows a..b-1 against rows a..n-1
        upper = np.arange(a, n)[None, :] > np.arange(a, b)[:, None]  # keep j > i
        vals = S[upper]
        out[pos:pos + vals.shape[0]] = vals
        pos += vals.shape[0]
    return np.clip(out, -1.0, 1.0)


def far_thresholds(impostor: Any, fars: Sequence[float] = FARS) -> dict[float, float]:
    """Thresholds ``{far: tau}`` from impostor scores: ``tau = d_(k+1)``, the ``(k+1)``-th largest
    score with ``k = floor(far * M)`` (module docstring). The fraction of impostor scores strictly
    above ``tau`` is ``<= far``, and equals ``k / M`` unless scores tie with ``tau``. A FAR needs at
    least ``ceil(1 / far)`` scores; fewer raise :class:`MetricError`."""
    s = _as_vector(impostor, "impostor scores")
    checked = [_check_far(f) for f in fars]
    if not checked:
        raise MetricError("no FAR given")
    M = s.shape[0]
    for far in checked:
        need = math.ceil(1.0 / far - _EPS)
        if M < need:
            raise MetricError(f"FAR {far:g} needs at least {need} impostor scores to be resolved, "
                              f"got {M}: embed more distinct identities (N faces give N(N-1)/2 scores)")
    ks = {far: int(math.floor(far * M + _EPS)) for far in checked}
    # the (k+1)-th largest is the element of ascending rank M-1-k
    ranks = sorted({M - 1 - k for k in ks.values()})
    part = np.partition(s, ranks)
    return {far: float(part[M - 1 - k]) for far, k in ks.items()}


def attack_success_rate(scores: Any, thresholds: Mapping[float, float]) -> dict[float, dict[str, Any]]:
    """Success rate of the attack at each FAR: a pair succeeds when its victim score (cosine of
    adversarial and target embeddings) is **strictly above** the threshold.

    ``thresholds`` is ``{far: tau}`` (a row of :data:`PAPER_THRESHOLDS` or :func:`far_thresholds`).
    Returns ``{far: {"threshold", "asr", "n", "successes", "ci_low", "ci_high"}}`` with a Wilson
    95 % interval.
    """
    s = _as_vector(scores, "attack scores")
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise MetricError(f"thresholds must be a non-empty mapping FAR -> threshold, got "
                          f"{type(thresholds).__name__}")
    n = int(s.shape[0])
    out: dict[float, dict[str, Any]] = {}
    for far, tau in thresholds.items():
        far = _check_far(far)
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(tau)):
            raise MetricError(f"the threshold at FAR {far:g} must be a finite number, got {tau!r}")
        k = int((s > float(tau)).sum())
        lo, hi = wilson_interval(k, n)  # n >= 1 here
        out[far] = {"threshold": float(tau), "asr": k / n, "n": n, "successes": k,
                    "ci_low": float(lo), "ci_high": float(hi)}
    return out


# --------------------------------------------------------------------------- pairing
def _natural_key(name: str) -> tuple[Any, ...]:
    from visec.data.builders.common import natural_key

    return (natural_key(name), name)  # the name itself breaks ties such as 1.png / 01.png


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (suffixes :data:`IMAGE_SUFFIXES`, any case) directly in ``folder``, in
    natural order (numbers compared as numbers). Hidden files (``.name``) are left out. A missing
    folder, or one without images, raises :class:`DataError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder" + ("" if folder.exists() else " (not found)"))
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _index_column(values: Any, where: str) -> list[int]:
    out = []
    for row, v in enumerate(values):
        text = _cell(v)
        try:
            i = int(text) if text is not None else None
        except ValueError:
            i = None
        if i is None or i < 0:
            raise DataError(f"{where}: row {row + 1}: index must be a non-negative integer, got {v!r}")
        out.append(i)
    seen: set[int] = set()
    for row, i in enumerate(out):
        if i in seen:
            raise DataError(f"{where}: row {row + 1}: index {i} appears twice")
        seen.add(i)
    return out


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{what} {path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path}: empty file") from None
    except Exception as exc:  # parser errors, encoding errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what} {path}: not a readable CSV ({reason})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise DataError(f"{what} {path}: no rows")
    return df


def pair_files(source_dir: str | os.PathLike, target_dir: str | os.PathLike, *,
               index_file: str | os.PathLike | None = None) -> pd.DataFrame:
    """Source/target pairs: a DataFrame with columns ``index`` (int), ``source``, ``target`` (paths
    as strings, joined to the folders).

    Without ``index_file``: every image of ``source_dir`` in natural order (:func:`list_images`),
    row ``i`` paired with ``targets[i % n_targets]`` (targets also in natural order), ``index = i``.
    With ``index_file`` (a CSV with columns ``source`` and ``target``, paths relative to the two
    folders, and optionally ``index``): its rows, in its order, exactly; every file must exist (the
    first missing one is named). Problems raise a one-line :class:`DataError`.
    """
    src_root, tgt_root = Path(source_dir), Path(target_dir)
    if index_file is None:
        sources, targets = list_images(src_root), list_images(tgt_root)
        return pd.DataFrame({
            "index": np.arange(len(sources), dtype=np.int64),
            "source": [str(p) for p in sources],
            "target": [str(targets[i % len(targets)]) for i in range(len(sources))],
        })
    index_file = Path(index_file)
    df = _read_csv(index_file, "index file")
    missing_cols = [c for c in ("source", "target") if c not in df.columns]
    if missing_cols:
        raise DataError(f"index file {index_file}: needs columns source and target; missing "
                        f"{', '.join(missing_cols)} (has {', '.join(df.columns)})")
    for root in (src_root, tgt_root):
        if not root.is_dir():
            raise DataError(f"{root}: not a folder" + ("" if root.exists() else " (not found)"))
    index = (_index_column(df["index"], f"index file {index_file}") if "index" in df.columns
             else list(range(len(df))))
    paths: dict[str, list[str]] = {"source": [], "target": []}
    for row in range(len(df)):
        for col, root in (("source", src_root), ("target", tgt_root)):
            rel = _cell(df[col].iloc[row])
            if rel is None:
                raise DataError(f"index file {index_file}: row {row + 1}: empty {col}")
            p = root / rel
            if not p.is_file():
                raise DataError(f"index file {index_file}: row {row + 1}: {col} {p} not found")
            paths[col].append(str(p))
    return pd.DataFrame({"index": np.asarray(index, dtype=np.int64), **paths})


def _stored_path(value: Any, base: Path) -> str:
    p = Path(str(value)).absolute()
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def write_pairs(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the pairing index of an attack run: a CSV with columns ``index, source, target,
    adversarial`` (other columns of ``df`` follow). Paths inside the CSV's folder are stored
    relative to it (the run folder can be moved), others as absolute paths. Returns the path."""
    path = Path(path)
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"write_pairs takes a DataFrame, got {type(df).__name__}")
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"pairs need columns {', '.join(PAIR_COLUMNS)}; missing {', '.join(missing)}")
    if df.empty:
        raise DataError("no pairs to write")
    index = _index_column(df["index"], "pairs")
    base = path.parent.absolute()
    out = df.copy()
    out["index"] = index
    for col in PAIR_COLUMNS[1:]:
        for row, v in enumerate(out[col]):
            if _cell(v) is None:
                raise DataError(f"pairs: row {row + 1}: empty {col}")
        out[col] = [_stored_path(v, base) for v in out[col]]
    out = out[list(PAIR_COLUMNS) + [c for c in out.columns if c not in PAIR_COLUMNS]]
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def read_pairs(path: str | os.PathLike, *, check_files: bool = True) -> pd.DataFrame:
    """Read an index written by :func:`write_pairs`: columns ``index`` (int), ``source``,
    ``target``, ``adversarial`` (absolute paths as strings; relative ones are taken relative to the
    CSV's folder), rows in the file's order. With ``check_files`` every file must exist (the first
    missing one is named in a one-line :class:`DataError`)."""
    path = Path(path)
    df = _read_csv(path, "pairs file")
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"pairs file {path}: needs columns {', '.join(PAIR_COLUMNS)}; missing "
                        f"{', '.join(missing)}")
    df["index"] = np.asarray(_index_column(df["index"], f"pairs file {path}"), dtype=np.int64)
    base = path.parent.absolute()
    for col in PAIR_COLUMNS[1:]:
        resolved = []
        for row, v in enumerate(df[col]):
            text = _cell(v)
            if text is None:
                raise DataError(f"pairs file {path}: row {row + 1}: empty {col}")
            p = Path(text)
            p = p if p.is_absolute() else base / p
            if check_files and not p.is_file():
                raise DataError(f"pairs file {path}: row {row + 1}: {col} {p} not found")
            resolved.append(str(p))
        df[col] = resolved
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- image quality
def pair_quality(adversarial: Any, source: Any, *, cap: float = 100.0) -> dict[str, Any]:
    """Per-pair PSNR (dB, capped at ``cap``) and SSIM of ``adversarial[i]`` against ``source[i]``:
    float ``(N, 3, H, W)`` in ``[0, 1]``. A source of another spatial size is first resized to the
    adversarial size (bilinear, antialiased), as in the original evaluation.

    Returns ``{"psnr": float64 (N,), "ssim": float64 (N,), "psnr_mean", "ssim_mean": float, "n",
    "source_resized": bool}``.
    """
    adv = _as_images(adversarial, "adversarial images")
    src = _as_images(source, "source images")
    if adv.shape[0] != src.shape[0]:
        raise MetricError(f"adversarial and source batches hold different numbers of images "
                          f"({adv.shape[0]} vs {src.shape[0]}): pair them first")
    if adv.shape[1] != src.shape[1]:
        raise MetricError(f"adversarial and source images differ in channels ({adv.shape[1]} vs "
                          f"{src.shape[1]})")
    resized = adv.shape[2:] != src.shape[2:]
    if resized:
        import torch
        import torch.nn.functional as F

        t = F.interpolate(torch.from_numpy(src), size=adv.shape[2:], mode="bilinear",
                          align_corners=False, antialias=True)
        src = t.clamp(0.0, 1.0).numpy()
    p = psnr(adv, src, cap=cap)
    s = ssim(adv, src)
    return {"psnr": p, "ssim": s, "psnr_mean": float(p.mean()), "ssim_mean": float(s.mean()),
            "n": int(p.shape[0]), "source_resized": bool(resized)}


# --------------------------------------------------------------------------- Frechet distance
def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Frechet distance of two Gaussians:
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The matrix square root is :func:`scipy.linalg.sqrtm`. When it fails (singular product:
    covariances from fewer samples than dimensions) ``1e-6 I`` is added to both covariances. Its
    imaginary part, a numerical residue, is dropped when it is small (below 1e-3 relative to the
    largest eigenvalue scale); a large one raises :class:`MetricError`. Tiny negative results of
    rounding are returned as 0.
    """
    from scipy import linalg

    m1, m2 = (np.atleast_1d(np.asarray(_to_numpy(m), dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(_to_numpy(s), dtype=np.float64)) for s in (sigma1, sigma2))
    d = m1.shape[0]
    if m1.ndim != 1 or m2.shape != m1.shape or s1.shape != (d, d) or s2.shape != (d, d):
        raise MetricError(f"frechet_distance needs two means of shape (D,) and two covariances of "
                          f"shape (D, D); got {m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}")
    for name, a in (("mu1", m1), ("sigma1", s1), ("mu2", m2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise MetricError(f"{name} holds non-finite values")

    def root(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LinAlgWarning on singular matrices; checked below
            return np.asarray(linalg.sqrtm(a @ b))

    covmean = root(s1, s2)
    if not np.isfinite(covmean).all():
        offset = 1e-6 * np.eye(d)
        covmean = root(s1 + offset, s2 + offset)
        if not np.isfinite(covmean).all():
            raise MetricError("the covariance product has no finite square root")
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean.real).max()))
        residue = float(np.abs(np.diagonal(covmean).imag).max())
        if residue > 1e-3 * scale:
            raise MetricError(f"the square root of the covariance product has an imaginary part of "
                              f"{residue:.3g}: the covariances are ill-conditioned (too few samples?)")
        covmean = covmean.real
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and sample covariance ``(D, D)`` of features ``(N, D)``, ``N >= 2``."""
    f = np.asarray(_to_numpy(features), dtype=np.float64)
    if f.ndim != 2:
        raise MetricError(f"features must have shape (N, D), got {f.shape}")
    if f.shape[0] < 2:
        raise MetricError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise MetricError("features hold non-finite values")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid_from_features(features_a: Any, features_b: Any) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets ``(N_a, D)``, ``(N_b, D)``."""
    mu1, s1 = gaussian_stats(features_a)
    mu2, s2 = gaussian_stats(features_b)
    if mu1.shape != mu2.shape:
        raise MetricError(f"feature sets differ in dimension ({mu1.shape[0]} vs {mu2.shape[0]})")
    return frechet_distance(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------- Inception
def _load_inception(weights: str | os.PathLike | None, device: Any = None):
    """torchvision's Inception-v3 with the state dict of a local file, ``fc`` replaced by the
    identity (the output is the 2048-d pool feature), in eval mode on ``device``."""
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        raise MetricError("FID needs Inception-v3 weights: give the path of a local file (a "
                          "torchvision inception_v3 state dict, .safetensors or .pth); visec never "
                          "downloads weights")
    import torch
    from torchvision.models import inception_v3

    from visec.checkpoint import load_into, load_state_dict_file

    path = Path(weights)
    try:
        state = load_state_dict_file(path, what="Inception-v3 weights")
        model = inception_v3(weights=None, aux_logits=False, init_weights=False)
        # torchvision's released file also holds the auxiliary classifier, which is not used
        load_into(model, state, source=f"Inception-v3 weights {path}", ignore=("AuxLogits.",))
    except CheckpointError as exc:
        raise MetricError(str(exc)) from None
    model.fc = torch.nn.Identity()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.eval().to(device)


def _image_batches(images: Any, batch_size: int, name: str) -> Iterator[Any]:
    """Batches of float tensors ``(b, 3, 299, 299)`` in ``[0, 1]`` (bilinear resize, as
    pytorch-fid). ``images``: float ``(N, 3, H, W)`` in ``[0, 1]`` (array or tensor), a folder of
    images, or a list of image paths."""
    import torch
    import torch.nn.functional as F

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.shape[-2:] == (INCEPTION_SIZE, INCEPTION_SIZE):
            return t
        return F.interpolate(t, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                             align_corners=False)

    if isinstance(images, (str, os.PathLike)) or (
            isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike))):
        from visec.data.images import load_rgb

        paths = list_images(images) if isinstance(images, (str, os.PathLike)) else [Path(p) for p in images]
        for s in range(0, len(paths), batch_size):
            batch = []
            for p in paths[s:s + batch_size]:
                arr = load_rgb(p)
                t = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0
                batch.append(resize(t))
            yield torch.cat(batch)
        return
    arr = _to_numpy(images)
    if not hasattr(arr, "shape") or not hasattr(arr, "__getitem__"):
        arr = np.asarray(arr)
    if len(arr.shape) != 4 or arr.shape[0] == 0:
        raise MetricError(f"{name} must be float (N, 3, H, W) in [0, 1], a folder or a list of "
                          f"image paths; got shape {tuple(arr.shape)}")
    for s in range(0, arr.shape[0], batch_size):
        x = _as_images(arr[s:s + batch_size], name)
        if x.shape[1] != 3:
            raise MetricError(f"{name} must have 3 colour channels, got {x.shape[1]}")
        yield resize(torch.from_numpy(x).float())


def _features(model: Any, images: Any, batch_size: int, name: str) -> np.ndarray:
    import torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise MetricError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = next(model.parameters()).device
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for x in _image_batches(images, int(batch_size), name):
            x = (x.to(device) - mean) / std
            out.append(model(x).float().flatten(1).cpu().numpy())
    if not out:
        raise MetricError(f"{name}: no images")
    return np.concatenate(out).astype(np.float64)


def inception_features(images: Any, weights: str | os.PathLike | None, batch_size: int = 32, *,
                       device: Any = None) -> np.ndarray:
    """Inception-v3 pool features ``float64 (N, 2048)`` of images resized to 299x299 (bilinear)
    and ImageNet-normalised.

    ``images``: float ``(N, 3, H, W)`` in ``[0, 1]`` (array or tensor), a folder of images
    (natural order) or a list of image paths. ``weights``: a local torchvision ``inception_v3``
    state dict (``.safetensors``, or a PyTorch file loadable with ``weights_only=True``), loaded
    strictly; no path or a missing/mismatched file raises :class:`MetricError`. ``device`` defaults
    to CUDA when available.
    """
    model = _load_inception(weights, device)
    return _features(model, images, batch_size, "images")


def fid(images_a: Any, images_b: Any, weights: str | os.PathLike | None, *, batch_size: int = 32,
        device: Any = None) -> float:
    """Frechet Inception distance between two image sets (each as in :func:`inception_features`);
    the network is loaded once. Sets of fewer than 2048 images give singular covariances and a
    biased FID: compare values computed on sets of the same size only."""
    model = _load_inception(weights, device)
    fa = _features(model, images_a, batch_size, "first image set")
    fb = _features(model, images_b, batch_size, "second image set")
    return fid_from_features(fa, fb)
