"""SBKA: zero-shot sketch-based image retrieval with bidirectional teacher-student alignment and
one-to-many cluster matching (with SAKE and plain fine-tuning as ``model.variant``)."""

from visec.methods.sbka.lightning_model import SBKAMethod, SBKAModule, SBKAParams  # noqa: F401  (registers sbka)
