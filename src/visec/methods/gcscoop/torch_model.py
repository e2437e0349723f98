"""Prompt learners on a frozen open_clip CLIP: zero-shot CLIP, CoOp, CoCoOp and KgCoOp.

The text side follows CLIP's own ``encode_text`` with the token embeddings of the prompt replaced:

    prompt_k = [SOS] C_1 ... C_M [tokens of class name k] [.] [EOS] [pad ...]     (n_cls, L, d)
    w_k      = LN(Transformer(prompt_k + P))[eos_k] @ W_text                        (n_cls, D)
    logits   = exp(s) * <v / |v|, w_k / |w_k|>,   v = CLIP image encoder(x)

``C`` (M x d) is the learnable context, shared by all classes (CoOp), initialised from the token
embeddings of ``ctx_init`` ("a photo of a": M = 4) or drawn from N(0, 0.02^2) for ``n_ctx`` random
tokens. CoCoOp shifts it per image, ``C + pi(v)`` with a two-layer meta-net ``pi`` (D -> D/16 -> d).
KgCoOp trains CoOp's context with a regulariser towards the frozen hand-crafted prompt features
(:meth:`PromptCLIP.handcrafted_features`). Zero-shot CLIP uses the hand-crafted prompt
"``ctx_init`` {class}." with nothing to train. The CLIP weights never train (``requires_grad``
off, kept in eval mode).

The class-dependent token tables are non-persistent buffers: a checkpoint holds CLIP and the
context (and the meta-net) only, so one checkpoint is evaluated on base and on new class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visec.errors import CheckpointError, ConfigError
from visec.models.classifier import Normalize

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LEARNERS = ("zeroshot", "coop", "cocoop", "kgcoop")


def tiny_clip(image_size: int = 32, embed_dim: int = 64, vision_layers: int | Sequence[int] = (1, 1, 1, 1),
              vision_width: int = 16, patch_size: int = 8, text_width: int = 64, text_layers: int = 3,
              heads: int = 4, context_length: int = 24) -> nn.Module:
    """A small open_clip CLIP with CLIP's BPE vocabulary: a ModifiedResNet image tower when
    ``vision_layers`` is a list of four block counts (the default), a ViT of that depth when it is an
    integer; a transformer text tower."""
    from open_clip.model import CLIP

    vision: dict[str, Any] = dict(image_size=image_size, width=vision_width, head_width=max(1, vision_width // heads))
    if isinstance(vision_layers, int):
        vision.update(layers=vision_layers, patch_size=patch_size)
    else:
        vision.update(layers=tuple(int(n) for n in vision_layers), head_width=16)
    return CLIP(embed_dim=embed_dim, vision_cfg=vision,
                text_cfg=dict(context_length=context_length, vocab_size=49408, width=text_width, heads=heads,
                              layers=text_layers))


def load_clip(arch: str, weights: str | Path | None, tiny: dict[str, Any] | None = None) -> nn.Module:
    """``arch`` ("tiny" or an open_clip model name such as ViT-B-16) with local ``weights`` (a state
    dict in safetensors or a torch file read with ``weights_only=True``); ``weights="random"`` keeps
    the random initialisation (tests). Nothing is downloaded."""
    if weights is None:
        raise ConfigError(f"model.clip_weights: give the local weights file of CLIP {arch} (safetensors or a "
                          f"state dict; visec never downloads), or 'random' for an untrained CLIP")
    if arch == "tiny":
        model = tiny_clip(**(tiny or {}))
    else:
        import open_clip

        if arch not in open_clip.list_models():
            from visec.utils import unknown_name

            raise ConfigError(unknown_name("model.clip", arch, open_clip.list_models()))
        model = open_clip.create_model(arch, pretrained=None)
    if str(weights) != "random":
        from visec.checkpoint import load_into, load_state_dict_file

        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"model.clip_weights: no file {path} (visec never downloads CLIP weights)")
        state = load_state_dict_file(path, "CLIP weights")
        state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
        load_into(model, state, source=str(path))
    return model


class PromptCLIP(nn.Module):
    """A frozen CLIP with a prompt learner; ``forward(images in [0, 1]) -> logits (B, n_classes)``
    over the current class names (:meth:`set_classnames`)."""

    def __init__(self, clip: nn.Module, classnames: Sequence[str], *, learner: str = "coop",
                 ctx_init: str | None = "a photo of a", n_ctx: int | None = None, meta_hidden: int | None = None,
                 image_size: int | None = None) -> None:
        super().__init__()
        import open_clip

        if learner not in LEARNERS:
            raise ConfigError(f"model.learner must be one of {', '.join(LEARNERS)} (got {learner!r})")
        self.clip = clip.eval()
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.learner = learner
        self.normalize = Normalize(CLIP_MEAN, CLIP_STD)
        self.image_size = image_size or _image_size(clip)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=clip.context_length)
        self.ctx_init = ctx_init
        width = clip.token_embedding.weight.shape[1]
        if ctx_init:
            tokens = self.tokenizer.encode(ctx_init)
            if n_ctx is not None and n_ctx != len(tokens):
                raise ConfigError(f"model.n_ctx={n_ctx} but model.ctx_init {ctx_init!r} is {len(tokens)} tokens; "
                                  f"set one of them (n_ctx: null takes the phrase's length)")
            with torch.no_grad():
                init = clip.token_embedding(torch.tensor(tokens)).clone()
        else:
            if not n_ctx:
                raise ConfigError("model.n_ctx: give the number of context tokens when model.ctx_init is null")
            init = torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(0)) * 0.02
        self.n_ctx = len(init)
        # zero-shot keeps the hand-crafted context as a frozen buffer (nothing to train)
        if learner == "zeroshot":
            self.register_buffer("ctx", init)
        else:
            self.ctx = nn.Parameter(init)
        embed_dim = clip.text_projection.shape[-1] if not isinstance(clip.text_projection, nn.Linear) else \
            clip.text_projection.out_features
        self.meta_net = (nn.Sequential(nn.Linear(embed_dim, meta_hidden or max(1, embed_dim // 16)),
                                       nn.ReLU(inplace=True),
                                       nn.Linear(meta_hidden or max(1, embed_dim // 16), width))
                         if learner == "cocoop" else None)
        self.set_classnames(classnames)
        self.register_load_state_dict_post_hook(self._forget_text_cache)

    def train(self, mode: bool = True) -> "PromptCLIP":
        super().train(mode)
        self.clip.eval()  # frozen: no dropout, no statistics updates
        return self

    # -- prompts --------------------------------------------------------------------------------
    def prompt_tokens(self, classnames: Sequence[str]) -> torch.Tensor:
        """Token ids ``(n_cls, L)`` of "<M placeholder tokens> {name}." (the placeholders are replaced
        by the context embeddings)."""
        placeholder = " ".join(["X"] * self.n_ctx)
        names = [n.replace("_", " ") for n in classnames]
        texts = [f"{placeholder} {n}." for n in names]
        too_long = [n for n, t in zip(names, texts) if len(self.tokenizer.encode(t)) + 2 > self.tokenizer.context_length]
        if too_long:
            raise ConfigError(f"class name(s) too long for CLIP's {self.tokenizer.context_length}-token context: {too_long[:3]}")
        return self.tokenizer(texts)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Tokenise the class names (the hand-crafted prompts' features are encoded on first use)."""
        if not classnames:
            raise ConfigError("a prompt learner needs at least one class name")
        self.classnames = list(classnames)
        ids = self.prompt_tokens(self.classnames).to(self.clip.token_embedding.weight.device)
        self.register_buffer("token_ids", ids, persistent=False)
        self._handcrafted = None

    def _forget_text_cache(self, *_: Any) -> None:  # new weights: the cached text features are stale
        self._handcrafted = None

    def prompts(self, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings ``(n_cls, L, d)``: SOS, the context ``(M, d)`` (default: the learnt one),
        then the class name, ".", EOS and padding, all embedded by CLIP's current token table."""
        ctx = self.ctx if ctx is None else ctx
        with torch.no_grad():
            emb = self.clip.token_embedding(self.token_ids)
        n = len(self.classnames)
        return torch.cat([emb[:, :1], ctx.unsqueeze(0).expand(n, -1, -1).to(emb.dtype), emb[:, 1 + self.n_ctx:]], dim=1)

    def encode_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """CLIP's text tower on prompt embeddings; features at each prompt's EOS (argmax token id)."""
        clip = self.clip
        cast = clip.transformer.get_cast_dtype()
        x = prompts.to(cast) + clip.positional_embedding.to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        eos = self.token_ids.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), eos.repeat(x.shape[0] // len(eos))]
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def handcrafted_features(self) -> torch.Tensor:
        """Normalised text features of the hand-crafted prompt "``ctx_init`` {name}." (frozen)."""
        if self._handcrafted is None or self._handcrafted.device != self.token_ids.device:
            phrase = self.ctx_init or "a photo of a"
            ids = self.tokenizer([f"{phrase} {n.replace('_', ' ')}." for n in self.classnames])
            with torch.no_grad():
                self._handcrafted = self.clip.encode_text(ids.to(self.token_ids.device), normalize=True)
        return self._handcrafted

    def text_features(self) -> torch.Tensor:
        """Normalised class text features ``(n_cls, D)`` of the current prompts."""
        if self.learner == "zeroshot":
            return self.handcrafted_features()
        return F.normalize(self.encode_prompts(self.prompts()), dim=-1)

    # -- forward ------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return F.normalize(self.clip.encode_image(x), dim=-1)  # frozen weights; input gradients still flow

    def logits_from_features(self, v: torch.Tensor) -> torch.Tensor:
        scale = self.clip.logit_scale.exp()
        if self.meta_net is None:
            return scale * v @ self.text_features().t()
        # CoCoOp: per-image context C + pi(v); one text pass per image
        shifts = self.meta_net(v)  # (B, d)
        out = []
        for vi, shift in zip(v, shifts):
            w = F.normalize(self.encode_prompts(self.prompts(self.ctx + shift)), dim=-1)
            out.append(scale * w @ vi)
        return torch.stack(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.image_features(images))


def _image_size(clip: nn.Module) -> int:
    size = getattr(clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)
