"""The embedded face-forgery data: generated offline from shipped assets (``visec data synth``)."""

from visec.data.synthetic.generate import SynthParams, SynthReport, make_synth_dataset, manifest_hash
from visec.data.synthetic.manipulations import FAMILIES

__all__ = ["FAMILIES", "SynthParams", "SynthReport", "make_synth_dataset", "manifest_hash"]
