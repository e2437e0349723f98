"""``visec attack --method adv_diffusion``: Adv-Diffusion on folders of source and target faces, with
the pixel baselines on the same surrogates, evaluated against the victims at their FAR thresholds.

Pairing is by an index file (``pairs.csv``: index, source, target, adversarial), written by the attack
and the only thing evaluation reads: file names are never re-sorted (the original evaluation paired
``10.png`` with source #2).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from visec.cards import ResultCard
from visec.errors import ConfigError
from visec.methods.adv_diffusion import AdvDiffusion, AdvDiffusionError, InpaintLDM, landmark_masks
from visec.methods.adv_diffusion.torch_model import mask_from_parsing

BASELINES = ("pgd", "mifgsm", "di_ti_mifgsm")
BASELINE_LABELS = {"pgd": "PGD", "mifgsm": "MI-FGSM", "di_ti_mifgsm": "TI-DIM"}
IMPOSTOR_SEED = 900_000  # the embedded faces whose impostor pairs set the thresholds of victims without a table


# -- loading ------------------------------------------------------------------------------------------------
@dataclass
class LoadedLDM:
    ldm: InpaintLDM
    size: int
    params: Any
    origin: str


def load_ldm(model: str | Path | None, overrides: Sequence[str] = ()) -> LoadedLDM:
    """The LDM of a ``visec train adv_diffusion`` run folder, or a local diffusers inpainting folder
    (Stable Diffusion 2 inpainting, 512 px). ``overrides`` (``model.*=...``) set the attack's
    parameters."""
    from visec.config import load_config
    from visec.methods.adv_diffusion import load_diffusers_inpainting

    if model is None:
        raise ConfigError("adv_diffusion needs --model: a run folder of `visec train adv_diffusion` (or "
                          "`visec bench --method adv_diffusion`), or a local diffusers inpainting folder")
    path = Path(model)
    if (path / "unet").is_dir() and (path / "vae").is_dir():
        cfg = load_config("adv_diffusion", [f"model.ldm={path}", *overrides])
        return LoadedLDM(load_diffusers_inpainting(path), 512, cfg.method_params(), str(path))
    from visec.engine import Engine

    engine = Engine.from_run(path, list(overrides))
    if engine.cfg.method != "adv_diffusion":
        raise ConfigError(f"{path}: a '{engine.cfg.method}' run; adv_diffusion needs its own LDM run")
    module, _ = engine.load_module()
    return LoadedLDM(module.net.eval(), engine.cfg.data.image_size, engine.cfg.method_params(), str(path))


def recognizers(specs: Sequence[str], *, cache_dir: Path, seed: int = 0,
                distill: dict[str, Any] | None = None) -> tuple[list[Any], list[dict]]:
    """Face recognisers from ``NAME``, ``NAME=WEIGHTS`` or ``distilled`` (visec's surrogates of dlib,
    distilled on the embedded faces and cached by seed; ``distill``: ``n``, ``epochs``), and the
    distillation reports."""
    from visec.models.face_recognition import DlibRecognizer, build_face_recognizer, distilled_surrogates

    out: list[Any] = []
    reports: list[dict] = []
    for spec in specs:
        name, _, weights = spec.partition("=")
        if name == "dlib":
            out.append(DlibRecognizer())
        elif name == "distilled":
            models, reps = distilled_surrogates(cache_dir=cache_dir, seed=seed, **(distill or {}))
            out.extend(models)
            reports.extend(reps)
        else:
            out.append(build_face_recognizer(name, weights or None))
    return out, reports


def _name(model: Any) -> str:
    return str(getattr(model, "name", type(model).__name__))


def check_protocol(surrogates: Sequence[Any], victims: Sequence[Any]) -> None:
    """Black-box protocol: no victim among the surrogates, and the surrogates are differentiable."""
    names = {_name(s) for s in surrogates}
    clash = sorted(names & {_name(v) for v in victims})
    if clash:
        raise AdvDiffusionError(f"victim {', '.join(clash)} is also a surrogate: the transfer protocol guides with "
                                f"the other models only (drop it from the surrogates)")
    for s in surrogates:
        if not isinstance(s, nn.Module) or getattr(s, "differentiable", True) is False:
            raise AdvDiffusionError(f"surrogate {_name(s)} is not differentiable; use it as a victim")


def load_faces(paths: Sequence[Path], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Faces as float ``(N, 3, size, size)`` in [0, 1] and the same as uint8 ``(N, size, size, 3)``."""
    from visec.data.images import load_rgb
    from visec.data.datamodule import resize_rgb

    arr = np.stack([resize_rgb(load_rgb(p), size) for p in paths]) if paths else np.zeros((0, size, size, 3), np.uint8)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255, arr


def identity_masks(faces: np.ndarray, names: Sequence[str], *, parsing: Path | None = None,
                   forehead: float = 0.35) -> torch.Tensor:
    """The inpainting masks: from label maps ``parsing/<stem>.png`` (CelebAMask-HQ classes) when given,
    else from dlib's 68 landmarks."""
    if parsing is None:
        return torch.from_numpy(landmark_masks(faces, forehead))
    import cv2

    out = []
    for face, name in zip(faces, names):
        path = Path(parsing) / f"{Path(name).stem}.png"
        if not path.is_file():
            raise AdvDiffusionError(f"{path}: no parsing map for source {name}")
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None or labels.ndim != 2:
            raise AdvDiffusionError(f"{path}: not a single-channel label map")
        labels = cv2.resize(labels, face.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        out.append(mask_from_parsing(labels.astype(np.int64))[None])
    return torch.from_numpy(np.stack(out))


# -- the baselines -----------------------------------------------------------------------------------------
class EnsembleEmbedding(nn.Module):
    """The surrogates' unit embeddings side by side ``(B, sum dims)``: the attack engine's model for
    the pixel baselines, with :func:`cosine_loss` as its loss."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    @property
    def dims(self) -> list[int]:
        return [int(m.dim) for m in self.models]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(m(x), dim=1) for m in self.models], 1)


def cosine_loss(dims: Sequence[int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample ``1 - mean_m cos(f_m(x), f_m(target))`` for ``y`` = the targets' stacked embeddings."""
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = [(a * b).sum(1) for a, b in zip(out.split(list(dims), 1), y.split(list(dims), 1))]
        return 1 - torch.stack(cos).mean(0)

    loss.__name__ = "ensemble_cosine"
    return loss


def run_baseline(name: str, sources: torch.Tensor, targets: torch.Tensor, surrogates: Sequence[nn.Module], *,
                 eps: float, steps: int = 20, seed: int = 0, batch_size: int = 16) -> tuple[torch.Tensor, dict]:
    """A targeted L-inf pixel attack from the attack engine on the surrogate ensemble's cosine."""
    from visec.attacks.suite import build_attack

    model = EnsembleEmbedding(surrogates).eval()
    attack = build_attack(name, model, eps=eps, steps=steps, alpha=2.5 * eps / steps, targeted=True,
                          loss_fn=cosine_loss(model.dims), seed=seed)
    out = []
    for s in range(0, len(sources), batch_size):
        with torch.no_grad():
            y = model(targets[s:s + batch_size])
        out.append(attack(sources[s:s + batch_size], y))
    return torch.cat(out) if out else sources.clone(), attack.config()


def eps_for_psnr(psnr_db: float) -> float:
    """The L-inf budget whose sign perturbation (every pixel moved by eps) has this PSNR."""
    return float(10 ** (-psnr_db / 20))


def matched_baseline(name: str, sources: torch.Tensor, targets: torch.Tensor, surrogates: Sequence[nn.Module],
                     psnr_db: float, *, steps: int = 20, seed: int = 0, tries: int = 5,
                     tolerance: float = 0.25) -> tuple[torch.Tensor, dict]:
    """The baseline at the L-inf budget whose mean PSNR matches ``psnr_db``: start from
    :func:`eps_for_psnr` and rescale the budget by the PSNR miss (``eps *= 10^((PSNR - target) / 20)``;
    clipping to [0, 1] and unsaturated steps make the first guess too small), keeping the closest run."""
    from visec.metrics.face_verification import pair_quality

    eps, best = eps_for_psnr(psnr_db), None
    for _ in range(tries):
        adv, cfg = run_baseline(name, sources, targets, surrogates, eps=eps, steps=steps, seed=seed)
        got = float(np.mean(pair_quality(adv.numpy(), sources.numpy())["psnr"]))
        if best is None or abs(got - psnr_db) < abs(best[2] - psnr_db):
            best = (adv, {**cfg, "matched_psnr": psnr_db, "achieved_psnr": got}, got)
        if abs(got - psnr_db) <= tolerance:
            break
        eps = min(eps * 10 ** ((got - psnr_db) / 20), 1.0)
    return best[0], best[1]


# -- evaluation ----------------------------------------------------------------------------------------------
def embed(model: Any, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            out.append(F.normalize(torch.as_tensor(model(images[s:s + batch_size])).float(), dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)


def victim_thresholds(victim: Any, size: int, n: int = 600, seed: int = IMPOSTOR_SEED) -> tuple[dict, str]:
    """FAR thresholds: the paper's table for its four models, else from the impostor pairs of ``n``
    embedded faces (``n (n - 1) / 2`` pairs, enough for FAR 0.001)."""
    from visec.data.synthetic.sources import gan_faces
    from visec.metrics.face_verification import PAPER_THRESHOLDS, far_thresholds, impostor_scores

    name = _name(victim)
    if name in PAPER_THRESHOLDS:
        return dict(PAPER_THRESHOLDS[name]), "the paper's table (AMT-GAN convention)"
    faces = torch.from_numpy(gan_faces(n, seed)).permute(0, 3, 1, 2).float() / 255
    if faces.shape[-1] != size:
        faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    scores = impostor_scores(embed(victim, faces))
    return far_thresholds(scores), f"impostor pairs of {n} embedded faces ({len(scores)} pairs)"


class ReferenceEmbeddings:
    """Each model's embeddings of the sources and targets, computed once and reused by every method's
    evaluation (dlib embeds at ~75 ms a face)."""

    def __init__(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        self.sources, self.targets = sources, targets
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, model: Any) -> tuple[np.ndarray, np.ndarray]:
        if id(model) not in self._cache:
            self._cache[id(model)] = (embed(model, self.sources), embed(model, self.targets))
        return self._cache[id(model)]


def evaluate(adversarial: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor, victims: Sequence[Any],
             thresholds: dict[str, dict], surrogates: Sequence[Any] = (),
             refs: ReferenceEmbeddings | None = None) -> dict[str, Any]:
    """Per victim: mean cosine to the target (and to the source) and ASR at each FAR threshold;
    per pair: PSNR and SSIM to the source; with ``surrogates``, their mean cosine to the target (the
    white-box objective, for reference). ``refs`` reuses the sources' and targets' embeddings."""
    from visec.metrics.face_verification import attack_success_rate, pair_quality

    refs = refs or ReferenceEmbeddings(sources, targets)
    quality = pair_quality(adversarial.numpy(), sources.numpy())
    out: dict[str, Any] = {"quality": {"psnr": float(np.mean(quality["psnr"])), "ssim": float(np.mean(quality["ssim"]))},
                           "victims": {}, "per_pair": {"psnr": np.asarray(quality["psnr"]).tolist(),
                                                       "ssim": np.asarray(quality["ssim"]).tolist()}}
    for v in victims:
        name = _name(v)
        es, et = refs(v)
        ea = embed(v, adversarial)
        cos = (ea * et).sum(1)
        asr = attack_success_rate(cos, thresholds[name])
        out["victims"][name] = {"cos_target": float(cos.mean()), "cos_source": float((ea * es).sum(1).mean()),
                                "clean_cos_target": float((es * et).sum(1).mean()),
                                "asr": {str(k): v for k, v in asr.items()}}
        out["per_pair"][f"cos_target/{name}"] = cos.tolist()
    if surrogates:
        out["surrogate_cos_target"] = float(np.mean([(embed(m, adversarial) * refs(m)[1]).sum(1).mean()
                                                     for m in surrogates]))
    return out


# -- the whole run -------------------------------------------------------------------------------------------
@dataclass
class AttackRun:
    pairs: pd.DataFrame
    results: dict[str, dict]  # method label -> evaluate(...) + config
    cards: list[Path] = field(default_factory=list)
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    surrogate_reports: list[dict] = field(default_factory=list)
    threshold_origin: dict[str, str] = field(default_factory=dict)


def save_images(images: torch.Tensor, names: Sequence[str], folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for img, name in zip(arr, names):
        Image.fromarray(img).save(folder / name)


def attack_folders(source: Path, target: Path, out: Path, *, model: str | Path, surrogates: Sequence[str],
                   victims: Sequence[str], index_file: Path | None = None, overrides: Sequence[str] = (),
                   parsing: Path | None = None, seed: int = 0, batch_size: int = 4,
                   baselines: Sequence[str] = (), baseline_eps: Sequence[str] = ("matched",),
                   baseline_steps: int = 20, cache_dir: Path | None = None, fid_weights: Path | None = None,
                   extra_scales: Sequence[float] = (), blend_variant: bool = False, reference: bool = True,
                   distill: dict[str, Any] | None = None, impostor_faces: int = 600,
                   log: Callable[[str], None] = lambda s: None) -> AttackRun:
    """Attack every (source, target) pair; write ``adv/``, ``pairs.csv``, one card per method (Adv-
    Diffusion and each baseline at each budget: ``matched`` = the L-inf budget whose PSNR equals
    Adv-Diffusion's mean PSNR, or a number / fraction such as ``8/255``). With ``fid_weights`` (a local
    torchvision Inception-v3 file) each method's FID against the sources is added."""
    from visec.config import parse_budget
    from visec.metrics.face_verification import pair_files, write_pairs
    from visec.runtime import runtime_info

    out = Path(out)
    cache_dir = Path(cache_dir or out / "cache")
    loaded = load_ldm(model, overrides)
    p = loaded.params
    sur, reports = recognizers(surrogates, cache_dir=cache_dir, seed=seed, distill=distill)
    vic, _ = recognizers(victims, cache_dir=cache_dir, seed=seed, distill=distill)
    check_protocol(sur, vic)
    pairs = pair_files(source, target, index_file=index_file)
    src, src_u8 = load_faces([Path(s) for s in pairs["source"]], loaded.size)  # paths joined to their folders
    tgt, _ = load_faces([Path(t) for t in pairs["target"]], loaded.size)
    masks = identity_masks(src_u8, list(pairs["source"]), parsing=parsing, forehead=p.forehead)
    names = [f"{int(i)}.png" for i in pairs["index"]]
    seeds = [seed * 1_000_003 + int(i) for i in pairs["index"]]

    def run(scale: float, blend: bool, progress: bool = False) -> tuple[torch.Tensor, dict]:
        """The guided loop over every pair in batches, with the parameters' settings but ``scale`` and
        ``blend``; the images and the card's config."""
        attack = AdvDiffusion(loaded.ldm, sur, scale=scale, t0=p.t0, steps=p.ddim_steps, eta=p.eta,
                              strength=p.strength, reduction=p.reduction, blend=blend)
        start, parts = time.perf_counter(), []
        for s in range(0, len(src), batch_size):
            parts.append(attack(src[s:s + batch_size], tgt[s:s + batch_size], masks[s:s + batch_size],
                                seeds=seeds[s:s + batch_size]).images)
            if progress:
                log(f"adv_diffusion: {min(s + batch_size, len(src))}/{len(src)} pairs")
        cfg = {**attack.config(), "surrogates": [_name(m) for m in sur], "ldm": loaded.origin,
               "image_size": loaded.size, "mask": "parsing" if parsing else "dlib-68-landmarks",
               "seconds_per_image": (time.perf_counter() - start) / max(len(src), 1)}
        return torch.cat(parts), cfg

    adv_t, adv_cfg = run(p.guidance_scale, p.blend, progress=True)
    save_images(adv_t, names, out / "adv")
    pairs = pairs.assign(adversarial=[f"adv/{n}" for n in names])
    write_pairs(pairs, out / "pairs.csv")
    thresholds, origins = {}, {}
    for v in vic:
        thresholds[_name(v)], origins[_name(v)] = victim_thresholds(v, loaded.size, n=impostor_faces)
    refs = ReferenceEmbeddings(src, tgt)
    results: dict[str, dict] = {}
    images = {"source": src, "target": tgt, "mask": masks, "Adv-Diffusion": adv_t}
    ev = evaluate(adv_t, src, tgt, vic, thresholds, sur, refs)
    ev["config"] = adv_cfg
    results["Adv-Diffusion"] = ev
    variants = [(f"Adv-Diffusion (s={scale:g})", scale, p.blend) for scale in extra_scales]
    if blend_variant:
        variants.append((f"Adv-Diffusion ({'no ' if p.blend else ''}face blend)", p.guidance_scale, not p.blend))
    for label, scale, blend in variants:  # the same loop and seeds (s = 0: the inpainting alone)
        images[label], cfg = run(scale, blend)
        results[label] = evaluate(images[label], src, tgt, vic, thresholds, sur, refs)
        results[label]["config"] = cfg
    if reference:  # no attack: the sources themselves against the targets
        results["no attack"] = evaluate(src.clone(), src, tgt, vic, thresholds, sur, refs)
        results["no attack"]["config"] = {"attack": "none", "seconds_per_image": 0.0}
    for b in baselines:
        for budget in baseline_eps:
            t = time.perf_counter()
            if budget == "matched":
                x_adv, cfg = matched_baseline(b, src, tgt, sur, ev["quality"]["psnr"], steps=baseline_steps, seed=seed)
            else:
                x_adv, cfg = run_baseline(b, src, tgt, sur, eps=parse_budget(budget, "eps"), steps=baseline_steps,
                                          seed=seed)
            label = f"{BASELINE_LABELS.get(b, b)} ({'matched PSNR' if budget == 'matched' else budget})"
            r = evaluate(x_adv, src, tgt, vic, thresholds, sur, refs)
            r["config"] = {**cfg, "budget": budget, "surrogates": [_name(s) for s in sur],
                           "seconds_per_image": (time.perf_counter() - t) / max(len(src), 1)}
            results[label] = r
            images[label] = x_adv
            log(f"{label}: PSNR {r['quality']['psnr']:.2f}")
    if fid_weights is not None:
        from visec.metrics.face_verification import fid

        for label, r in results.items():
            r["quality"]["fid_to_sources"] = fid(images[label], src, fid_weights)
    cards = []
    for label, r in results.items():
        method = ("adv_diffusion" if label.startswith("Adv-Diffusion") else "none" if label == "no attack"
                  else f"baseline/{label.split(' ')[0].lower()}")
        card = ResultCard(method=method,
                          train_data=loaded.origin, test_data=f"{Path(source).name}->{Path(target).name}",
                          protocol=f"impersonation:{label}", seed=seed,
                          metrics={k: r[k] for k in ("quality", "victims", "surrogate_cos_target") if k in r},
                          config=r["config"],
                          runtime=runtime_info(), selection="none",
                          extra={"thresholds": {k: {str(f): t for f, t in v.items()} for k, v in thresholds.items()},
                                 "threshold_origin": origins, "pairs": str(out / "pairs.csv"), "n_pairs": len(pairs)},
                          timings={"seconds_per_image": r["config"]["seconds_per_image"]})
        cards.append(card.save(out / "cards"))
    (out / "per_pair.json").write_text(json.dumps({k: r["per_pair"] for k, r in results.items()}))
    return AttackRun(pairs, results, cards, images, reports, origins)
