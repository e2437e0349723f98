"""What several test files share (importable by name: ``tests/`` is on the path through its conftest):
the one config helper and each method's tiny end-to-end run."""

from __future__ import annotations


def run_config(method: str, *overrides: str, out=None, name: str = "run"):
    """A method's shipped config with overrides, writing into ``out`` (the one config helper of the
    tests: no per-file ``_cfg`` copies)."""
    from visec.config import load_config

    return load_config(method, [*([f"output_dir={out}", f"name={name}"] if out is not None else []), *overrides])


# Each method's tiny end-to-end run on the embedded data: (data fixture, overrides, card name, the
# frame AUC its test must beat). One fit per session, shared by the contract test that checks the
# learning (tests/core/test_contract.py) and the method's own file that checks its extra stages.
E2E_RUNS: dict[str, tuple[str, tuple[str, ...], str, float]] = {
    # r = 0.1 with d = 3 (the 64 px default d = 1 also learns, but its AUC on this 36-image test
    # split sits too close to 0.7 for a reliable assertion: 0.72 at seeds 0 and 1; d = 3: 0.73/0.77)
    "acmf": ("synth_small", ("model.backbone=mobilenetv2", "model.weights=imagenet", "model.dropout=0",
                             "model.low_pass=3", "train.max_epochs=2", "train.bootstrap=0"),
             "acmf/mobilenetv2+imagenet", 0.7),
    "classifier": ("synth_mnv2", ("model.backbone=mobilenetv2", "model.weights=imagenet", "data.image_size=64",
                                  "train.max_epochs=3", "train.bootstrap=0", "data.batch_size=16"),
                   "classifier/mobilenetv2+imagenet", 0.75),
    # from random weights the mixed embedded set is too subtle for a test-sized SSAAFormer (test AUC
    # 0.50-0.59 on synth_small, like the tiny_cnn baseline); the resynth family at 32 px is learnt
    # in 8 epochs (test AUC about 0.9)
    "deepfidelity": ("synth_resynth", ("train.bootstrap=0", "model.depths=[1,1,1,1]", "model.dims=[16,32,64,128]",
                                       "model.head_dim=16", "data.image_size=32", "train.max_epochs=8",
                                       "model.patch_sizes=[2,2,2,2]", "model.layer_scale=1.0", "model.drop_path=0"),
                     "deepfidelity", 0.7),
    "hfc_mffd": ("synth_small", ("train.max_epochs=3", "train.bootstrap=0"), "hfc_mffd", 0.7),
}

# GCSCoOp's tiny run (tests/conftest.py gcscoop_e2e): the test-sized CLIP pre-training and the fit
GCSCOOP_PRETRAIN = {"epochs": 12, "batch_size": 128}
GCSCOOP_E2E = ("train.max_epochs=10", "train.lr=0.01")  # zero-shot base 0.333 -> 0.417 (seed 0)
