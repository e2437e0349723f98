"""Adv-Diffusion (AAAI 2024): identity impersonation by identity-guided latent-diffusion inpainting."""

from visec.methods.adv_diffusion.lightning_model import *  # noqa: F401,F403 (registers the method)
from visec.methods.adv_diffusion.torch_model import (AdvDiffusion, AdvDiffusionError, InpaintLDM,  # noqa: F401
                                                     build_tiny_ldm, ddim_steps, landmark_masks, ldm_timesteps,
                                                     load_diffusers_inpainting, mask_from_landmarks,
                                                     mask_from_parsing, scaled_linear_alphas)
