"""Sequential deepfake detection: MMNet (reconstructed) and its SeqFakeFormer baseline, with face
recovery (``model.variant``: ``mmnet`` or ``seqfakeformer``)."""

from visec.methods.mmnet.lightning_model import MMNetMethod, SequenceModule, SequenceParams  # noqa: F401  (registers mmnet)
