"""FedForgery: a classifier on the residual of a VQ (or Gaussian-VAE) generator, trained centrally or
across clients on Flower (:mod:`visec.federated`)."""

from visec.methods.fedforgery.lightning_model import FedForgery, FedForgeryMethod, FedForgeryParams, local_losses
from visec.methods.fedforgery.torch_model import (FedForgeryNet, ResBlock, ResidualGenerator, VectorQuantizer,
                                                  nearest_codes)

__all__ = ["FedForgery", "FedForgeryMethod", "FedForgeryParams", "local_losses", "FedForgeryNet", "ResBlock",
           "ResidualGenerator", "VectorQuantizer", "nearest_codes"]
