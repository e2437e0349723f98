"""GCSCoOp and its baselines (zero-shot CLIP, CoOp, CoCoOp, KgCoOp, SAM-CoOp) as one engine method.

Importing this package registers the method ``gcscoop``. See ``README.md`` in this folder for the
paper, the equations and what differs from the official code.
"""

from visec.methods.gcscoop.lightning_model import GCSCoOpMethod, GCSCoOpParams, PromptLearnerModule
from visec.methods.gcscoop.torch_model import LEARNERS, PromptCLIP, load_clip, tiny_clip

__all__ = ["GCSCoOpMethod", "GCSCoOpParams", "PromptLearnerModule", "LEARNERS", "PromptCLIP", "load_clip",
           "tiny_clip"]
