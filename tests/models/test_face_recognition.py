"""Face-recognition models: the paper's four architectures (loading public-style checkpoints
strictly), the tiny families, dlib's black-box recogniser and the distilled surrogates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visec.models.face_recognition import (FACE_RECOGNIZER_NAMES, DlibRecognizer, FaceModelError,
                                           FaceRecognizer, _backbone, build_face_recognizer,
                                           count_parameters, distill_surrogate,
                                           distilled_surrogates, surrogate_agreement)

PAPER = ("irse50", "mobileface", "facenet")  # ir152 is checked on its own (70 M parameters)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _random_state_file(name: str, path) -> str:
    """A random state dict for ``name`` in the layout of the public checkpoints (no wrapper prefix)."""
    dim, size = (512, 160) if name == "facenet" else (512, 112)
    torch.manual_seed(0)
    net = _backbone(name, dim, size)
    state = net.state_dict()
    if name == "facenet":  # AMT-GAN's facenet.pth keeps the VGGFace2 classifier head
        state["logits.weight"] = torch.randn(10, 512)
        state["logits.bias"] = torch.zeros(10)
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fr_weights")
    return {n: build_face_recognizer(n, _random_state_file(n, d / f"{n}.pth")) for n in PAPER}


@pytest.fixture(scope="module")
def dlib_faces():
    """64 GAN faces (their own seed) and dlib's unit embeddings of them (about 5 s)."""
    from visec.data.synthetic.sources import gan_faces

    faces = gan_faces(64, seed=777_001)
    return faces, DlibRecognizer().embed_faces(faces)


def _images(b=2, h=64, w=64, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_names():
    assert FACE_RECOGNIZER_NAMES == ("ir152", "irse50", "mobileface", "facenet", "tiny_ir",
                                     "tiny_mobileface")


@pytest.mark.parametrize("name", PAPER)
def test_paper_models_shape_norm_and_resize(paper_models, name, one_torch_thread):
    model = paper_models[name]
    assert isinstance(model, FaceRecognizer) and model.name == name and model.dim == 512
    assert not model.training
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    out = model(_images(2, 64, 80))
    size = 160 if name == "facenet" else 112
    assert seen == [(2, 3, size, size)] and model.input_size == size
    assert out.shape == (2, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_ir152_architecture(one_torch_thread):
    net = _backbone("ir152", 512, 112)
    # IR-152: 3 + 8 + 36 + 3 units; 70.7 M parameters (a 512-D head on the 7x7x512 map)
    assert len(net.body) == 50 and count_parameters(net) == 70_737_600
    model = FaceRecognizer(net, name="ir152", input_size=112, dim=512).eval()
    with torch.no_grad():
        out = model(_images(1, 128, 128))
    assert out.shape == (1, 512) and abs(float(out.norm()) - 1) < 1e-5


def test_public_checkpoint_layout():
    """Key names and sizes of the public (InsightFace_Pytorch / face.evoLVe) checkpoints."""
    net = _backbone("irse50", 512, 112)
    assert count_parameters(net) == 43_797_696
    irse = net.state_dict()
    assert irse["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert irse["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)  # first unit of stage 2
    assert irse["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)  # SE, reduction 16
    assert irse["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert "output_layer.4.running_var" in irse and len([k for k in irse if k.startswith("body.")]) > 0
    mf = _backbone("mobileface", 512, 112).state_dict()
    assert mf["conv_23.conv.conv.weight"].shape == (128, 64, 1, 1)
    assert mf["conv_4.model.5.conv_dw.conv.weight"].shape == (256, 1, 3, 3)
    assert mf["conv_6_dw.conv.weight"].shape == (512, 1, 7, 7)
    assert mf["linear.weight"].shape == (512, 512) and "bn.running_mean" in mf


@pytest.mark.parametrize("name", ["tiny_ir", "tiny_mobileface"])
def test_tiny_models(name, one_torch_thread):
    model = build_face_recognizer(name)
    assert model.input_size == 64 and model.dim == 128 and count_parameters(model) < 500_000
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    x = _images(3, 100, 90).requires_grad_()
    out = model(x)
    assert seen == [(3, 3, 64, 64)]
    assert out.shape == (3, 128) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_reaches_input_of_paper_model(paper_models, one_torch_thread):
    model = paper_models["mobileface"]
    with torch.no_grad():
        target = model(_images(1, 112, 112, seed=1))
    x = _images(1, 112, 112).requires_grad_()
    (model(x) * target).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,file", [("ir152", "ir152.pth"), ("irse50", "irse50.pth"),
                                       ("mobileface", "mobile_face.pth"), ("facenet", "facenet.pth")])
def test_paper_models_need_weights(name, file, tmp_path):
    with pytest.raises(FaceModelError) as exc:
        build_face_recognizer(name)
    msg = _one_line(exc)
    assert "weights" in msg and file in msg
    missing = tmp_path / "nope.pth"
    with pytest.raises(FaceModelError) as exc:
        build_face_recognizer(name, missing)
    assert str(missing) in _one_line(exc)


def test_unknown_name():
    with pytest.raises(FaceModelError) as exc:
        build_face_recognizer("irse5O")
    assert "did you mean" in _one_line(exc) and "irse50" in str(exc.value)


def test_state_dict_round_trip_and_strictness(tmp_path, one_torch_thread):
    torch.manual_seed(1)
    model = build_face_recognizer("tiny_ir")
    x = _images(2)
    ref = model(x)
    # the backbone's own keys, the wrapper's ("backbone.") and DataParallel's ("module.") all load
    for i, state in enumerate([model.backbone.state_dict(), model.state_dict(),
                               {"module." + k: v for k, v in model.backbone.state_dict().items()}]):
        path = tmp_path / f"w{i}.pth"
        torch.save(state, path)
        again = build_face_recognizer("tiny_ir", path)
        assert torch.equal(again(x), ref)
    bad = dict(model.backbone.state_dict())
    bad["output_layer.9.weight"] = bad.pop("output_layer.3.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(FaceModelError) as exc:
        build_face_recognizer("tiny_ir", tmp_path / "bad.pth")
    msg = _one_line(exc)
    assert "missing" in msg and "unexpected" in msg and "output_layer.3.weight" in msg
    # a checkpoint of another architecture is refused too
    with pytest.raises(FaceModelError) as exc:
        build_face_recognizer("tiny_mobileface", tmp_path / "w0.pth")
    _one_line(exc)


def test_dim_follows_checkpoint(tmp_path):
    model = build_face_recognizer("tiny_mobileface", dim=64)
    assert model(_images(1)).shape == (1, 64)
    torch.save(model.backbone.state_dict(), tmp_path / "m.pth")
    assert build_face_recognizer("tiny_mobileface", tmp_path / "m.pth").dim == 64


def test_bad_images_refused():
    model = build_face_recognizer("tiny_ir")
    with pytest.raises(FaceModelError) as exc:
        model(torch.rand(2, 64, 64, 3))
    _one_line(exc)
    with pytest.raises(FaceModelError):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_dlib_recognizer(dlib_faces):
    faces, emb = dlib_faces
    dlib_fr = DlibRecognizer()
    assert (dlib_fr.name, dlib_fr.dim, dlib_fr.differentiable) == ("dlib", 128, False)
    x = torch.from_numpy(faces[:3]).permute(0, 3, 1, 2).float() / 255
    out = dlib_fr(x)
    assert out.shape == (3, 128) and out.dtype == torch.float32 and not out.requires_grad
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert np.allclose(out.numpy(), emb[:3], atol=1e-6)  # the float path = the uint8 path
    same = float((dlib_fr(x[:1]) * out[:1]).sum())
    assert same == pytest.approx(1.0, abs=1e-6)
    assert float((out[0] * out[1]).sum()) < 0.999 and float((out[0] * out[2]).sum()) < 0.999


def test_distillation_learns(dlib_faces, one_torch_thread):
    """Distillation moves the network towards dlib: from a plain random start, a few epochs raise the
    held-out cosine far above the untrained network's; with the default start (the head set to the
    teacher's mean direction, which alone gives a high cosine), training fits the pairwise identity
    structure of the faces it saw, which no untrained network has."""
    faces, emb = dlib_faces
    torch.manual_seed(0)
    untrained = surrogate_agreement(build_face_recognizer("tiny_mobileface"), faces, emb)
    model, report = distill_surrogate("tiny_mobileface", faces, emb, seed=0, epochs=4, batch_size=16,
                                      init_head=False)
    assert model.name == "tiny_mobileface<-dlib" and not model.training
    assert report["n_train"] + report["n_val"] == 64 and report["n_val"] == 13 and report["epochs"] == 4
    for key in ("val_mean_cosine", "val_pair_spearman", "val_pair_pearson", "seconds"):
        assert np.isfinite(report[key])
    assert report["val_mean_cosine"] > untrained["mean_cosine"] + 0.3
    model, report = distill_surrogate("tiny_mobileface", faces, emb, seed=0, epochs=25, batch_size=16,
                                      lr=1e-2)
    fitted = surrogate_agreement(model, faces, emb)  # 0.43 here (AVX2 and AVX-512 kernels alike)
    assert fitted["n"] == 64 and report["val_mean_cosine"] > 0.9
    assert fitted["pair_spearman"] > untrained["pair_spearman"] + 0.25


def test_distilled_surrogates_cache(tmp_path, one_torch_thread):
    first, reports = distilled_surrogates(seed=3, n=24, cache_dir=tmp_path, epochs=1)
    assert [m.name for m in first] == ["tiny_ir<-dlib", "tiny_mobileface<-dlib"]
    assert [r["cached"] for r in reports] == [False, False]
    assert reports[0]["face_seed"] == 300_003 and reports[0]["n_train"] + reports[0]["n_val"] == 24
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and len(list(tmp_path.glob("*.npy"))) == 1
    again, reports2 = distilled_surrogates(seed=3, n=24, cache_dir=tmp_path, epochs=1)
    assert [r["cached"] for r in reports2] == [True, True]
    for a, b, r1, r2 in zip(first, again, reports, reports2):
        assert a.name == b.name and not b.training
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert r1["val_mean_cosine"] == r2["val_mean_cosine"]
    # another seed is another cache entry
    _, reports3 = distilled_surrogates(("tiny_ir",), seed=4, n=24, cache_dir=tmp_path, epochs=1)
    assert reports3[0]["cached"] is False
