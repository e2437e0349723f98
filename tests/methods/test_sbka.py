"""SBKA: its losses at known inputs, the learning-rate rule, which parameters each phase trains,
the faithful/detached phase-2 gradient, and an end-to-end tiny run that retrieves unseen classes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visec.methods.sbka.torch_model import epoch_lr, gaussian_alignment, soft_cross_entropy


def test_soft_cross_entropy_known_answers():
    p = torch.zeros(2, 2, requires_grad=True)
    q = torch.zeros(2, 2)
    photo = torch.tensor([1.0, 1.0])
    assert float(soft_cross_entropy(p, q, photo)) == pytest.approx(math.log(2))
    # only photos count, and the divisor is the number of photos
    p = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = soft_cross_entropy(p, q, torch.tensor([1.0, 0.0]), mask, scale=0.3)
    target = F.softmax(q[0] + 0.3 * mask[0], dim=0)
    assert float(loss) == pytest.approx(float(-(target * F.log_softmax(p[0], dim=0)).sum()), rel=1e-6)
    loss.backward()
    # d/dp = (softmax(p) - softmax(q + 0.3 c)) / sum(m) on photo rows, 0 on sketch rows
    assert torch.allclose(p.grad[0], F.softmax(p[0].detach(), 0) - target, atol=1e-6)
    assert torch.equal(p.grad[1], torch.zeros(2))
    # no photo in the batch: 0, not a division by zero
    assert float(soft_cross_entropy(p, q, torch.zeros(2))) == 0.0


def test_gaussian_alignment_known_answer():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    assert float(gaussian_alignment(z.clone(), gen)) == pytest.approx(0.0, abs=1e-7)  # f == z
    f = torch.tensor([[1.0, 0.0, -1.0]])
    z = torch.randn(1, 3, generator=torch.Generator().manual_seed(5))
    pz, pf = F.softmax(z, 1), F.softmax(f, 1)
    kl_z_f = float((pz * (pz.log() - pf.log())).sum())  # KL(softmax(z) || softmax(f)), the direction used
    kl_f_z = float((pf * (pf.log() - pz.log())).sum())
    got = float(gaussian_alignment(f, torch.Generator().manual_seed(5)))
    assert got == pytest.approx(kl_z_f, rel=1e-5) and abs(kl_z_f - kl_f_z) > 1e-3 and got >= 0


def test_epoch_lr_rule():
    assert epoch_lr(1e-4, 0, 20) == pytest.approx(1e-4)
    assert epoch_lr(1e-4, 10, 20) == pytest.approx(3.162e-6, rel=1e-3)
    assert epoch_lr(1e-4, 19, 20) == pytest.approx(1.413e-7, rel=1e-3)


def _trained(cfg, state, *, drop_teacher_loss: bool = False):
    """A fresh module from ``state``, fitted with Lightning directly (no validation, no checkpoints)."""
    import lightning as L

    from visec.engine.engine import build_datamodule, build_module

    module = build_module(cfg)
    module.net.load_state_dict(state)
    if drop_teacher_loss:
        full = module.losses
        module.losses = lambda batch: {k: v for k, v in full(batch).items() if k != "teacher"}
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=cfg.train.max_epochs, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}


def _tiny(sketch_small, *extra):
    from shared_runs import run_config

    return run_config("sbka", "model.teacher_weights=random", "model.seen=40",
                      "model.timm={depths: [1,1,1,1], dims: [8,16,32,64]}", f"data.root={sketch_small}",
                      "data.image_size=32", "data.batch_size=24", "train.lr=0.01", *extra)


def _changed(a: dict, b: dict, prefix: str) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_phases_train_the_right_parameters(sketch_small, one_torch_thread):
    """Phase 1 leaves the whole teacher bit-identical; phase 2 changes its head and nothing else of it;
    SAKE never touches the teacher; the student trains in every variant."""
    from visec.engine.engine import build_module

    torch.manual_seed(0)
    cfg1 = _tiny(sketch_small, "model.phase1_epochs=1", "train.max_epochs=1")
    start = {k: v.clone() for k, v in build_module(cfg1).net.state_dict().items()}
    after1 = _trained(cfg1, start)
    assert not _changed(start, after1, "teacher.") and _changed(start, after1, "student.encoder.")
    after2 = _trained(_tiny(sketch_small, "model.phase1_epochs=1", "train.max_epochs=2"), start)
    assert _changed(start, after2, "teacher.head.") and not _changed(start, after2, "teacher.encoder.")
    sake = _trained(_tiny(sketch_small, "model.variant=sake", "model.phase1_epochs=0", "train.max_epochs=2"), start)
    assert not _changed(start, sake, "teacher.") and _changed(start, sake, "student.kd.")


def test_unfaithful_phase_two_student_ignores_teacher_loss(sketch_small, one_torch_thread):
    """faithful=false: the student's phase-2 update equals a run without the teacher's loss; the
    official (faithful) gradient differs, because L_kd2 reaches the student through its soft target."""
    from visec.engine.engine import build_module

    torch.manual_seed(0)
    base = ("model.phase1_epochs=0", "train.max_epochs=1")
    start = {k: v.clone() for k, v in build_module(_tiny(sketch_small, *base)).net.state_dict().items()}
    detached = _trained(_tiny(sketch_small, *base, "model.faithful=false"), start)
    without = _trained(_tiny(sketch_small, *base, "model.faithful=false"), start, drop_teacher_loss=True)
    faithful = _trained(_tiny(sketch_small, *base, "model.faithful=true"), start)
    student = [k for k in start if k.startswith("student.")]
    assert all(torch.equal(detached[k], without[k]) for k in student)
    assert any(not torch.equal(faithful[k], without[k]) for k in student)
    assert _changed(start, detached, "teacher.head.") and not _changed(start, without, "teacher.head.")


def test_end_to_end_beats_chance(sketch_small, tmp_path, one_torch_thread):
    """The embedded teacher pre-trained on the seen photos, then SBKA's two phases through the engine:
    on the 10 unseen classes (chance mAP 0.10), both matchings retrieve clearly better than chance."""
    from shared_runs import run_config

    from visec.engine import Engine

    cfg = run_config("sbka", f"data.root={sketch_small}", f"model.embedded_root={sketch_small}",
                     "model.timm={depths: [1,1,1,1], dims: [16,32,64,128]}",
                     "model.teacher_pretrain={epochs: 30, size: 32, lr: 0.001, batch_size: 32}", "data.image_size=32",
                     "train.max_epochs=6", "model.phase1_epochs=3", "train.lr=0.001", "data.batch_size=24",
                     out=tmp_path)
    engine = Engine(cfg)
    engine.fit()
    card = engine.test()
    chance = card.metrics["data"]["chance_map"]
    assert chance == pytest.approx(0.1, abs=0.01)
    assert card.metrics["euclidean"]["map@all"] > chance + 0.05
    assert card.metrics["cluster"]["map@all"] > chance + 0.05


def test_teacher_pretraining_leaves_the_callers_random_state(sketch_small, tmp_path):
    """A run must not depend on whether the embedded teacher was already cached: pre-training it
    leaves torch's global random state untouched (and a second call returns the cached file)."""
    import json

    from visec.data.sbir import read_sbir
    from visec.data.synthetic.sketches import META_FILE
    from visec.methods.sbka.pretrain import pretrain_teacher

    data = read_sbir("synth", sketch_small)
    digest = json.loads((sketch_small / META_FILE).read_text())["digest"]
    kw = dict(arch="convnextv2_atto", timm_kwargs={"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]},
              settings={"epochs": 1, "size": 32}, log=lambda m: None)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    path = pretrain_teacher(data, digest + "-rng-test", force=True, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    mtime = path.stat().st_mtime_ns
    assert pretrain_teacher(data, digest + "-rng-test", **kw) == path and path.stat().st_mtime_ns == mtime
