"""HFC-MFFD (hierarchical forgery classifier on multi-modality face forgery clues) as an engine method.

Importing this package registers the method ``hfc_mffd``. See ``README.md`` in this folder for the
paper, the equations and where visec departs from the official code.
"""

from visec.methods.hfc_mffd.lightning_model import HFCMFFD, HFCMethod, HFCParams, dct_statistics
from visec.methods.hfc_mffd.torch_model import (BRANCHES, HFCMFFDNet, IntraAttentionHead, PatchBranch, cal_stride,
                                                column_to_row_major, extract_patches, fit_fusion_logits, hfc_loss,
                                                hierarchical_decision, image_head_weight_column_to_row, nine_crops,
                                                one_channel_stem, paint_patches, patch_offsets, patches_column_to_row,
                                                split_modalities)

__all__ = ["HFCMFFD", "HFCParams", "HFCMethod", "dct_statistics", "BRANCHES", "HFCMFFDNet",
           "IntraAttentionHead", "PatchBranch", "cal_stride", "column_to_row_major", "extract_patches",
           "fit_fusion_logits", "hfc_loss", "hierarchical_decision", "image_head_weight_column_to_row",
           "nine_crops", "one_channel_stem", "paint_patches", "patch_offsets", "patches_column_to_row",
           "split_modalities"]
