"""The Xception baseline and the MobileNetV2 option (ImageNet weights shipped in a pip package)."""

from __future__ import annotations

import pytest
import torch

from visec.config import load_config
from visec.engine import build_module
from visec.engine.engine import card_name
from visec.errors import CheckpointError
from visec.registry import BACKBONES


def test_xception_is_the_registered_baseline_with_its_paper_defaults():
    cfg = load_config("xception")
    module = build_module(cfg)
    assert card_name(cfg) == "xception"
    assert cfg.model["backbone"] == "xception" and cfg.model["dropout"] == 0.5
    out = module.net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1)
    assert module.net.backbone.num_features == 2048


def test_card_names_say_backbone_and_pretraining():
    cfg = load_config("classifier", ["model.backbone=mobilenetv2", "model.weights=imagenet"])
    assert card_name(cfg) == "classifier/mobilenetv2+imagenet"
    assert card_name(load_config("classifier", ["model.backbone=mobilenetv2"])) == \
        "classifier/mobilenetv2"


def test_xception_fits_a_small_batch(one_torch_thread):
    torch.manual_seed(0)
    module = build_module(load_config("xception", ["model.dropout=0"]))
    net = module.net.train()
    x = torch.rand(8, 3, 64, 64)
    y = torch.tensor([0, 1] * 4, dtype=torch.float32)[:, None]
    x[y[:, 0] == 1, :, ::2, ::2] += 0.3  # a high-frequency trace on the fakes
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x.clamp(0, 1)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_imagenet_mobilenetv2_loads_every_trunk_key_and_still_sees_a_cat():
    from skimage.data import chelsea
    from torchvision.models import mobilenet_v2

    from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD, packaged_imagenet_mobilenetv2

    trunk = BACKBONES.build("mobilenetv2", weights="imagenet").eval()
    full = mobilenet_v2(weights=None).eval()
    full.load_state_dict(torch.load(packaged_imagenet_mobilenetv2(), weights_only=True))
    for k, v in trunk.state_dict().items():  # the trunk holds exactly the packaged tensors
        assert torch.equal(v, full.state_dict()[k]), k
    x = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = full.classifier(trunk(x))
    assert logits.argmax().item() == 285  # ImageNet class 285: Egyptian cat


def test_weights_errors_are_one_line(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="no installed package ships ImageNet weights"):
        BACKBONES.build("xception", weights="imagenet")
    bad = tmp_path / "bad.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(CheckpointError, match="does not match the model"):
        BACKBONES.build("mobilenetv2", weights=bad)
    with pytest.raises(CheckpointError, match="not found|does not exist|no such"):
        BACKBONES.build("mobilenetv2", weights=tmp_path / "missing.pth")
