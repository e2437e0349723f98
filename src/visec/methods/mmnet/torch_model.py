"""SeqFakeFormer and MMNet as pure ``nn.Module`` s, with the token encoding they share.

Shapes (batch ``B``, model width ``d``): images ``(B, 3, H, W)`` in [0, 1]; a ground-truth
sequence is ``(B, 5)`` edit ids (1..5, zero-padded); the decoder reads ``(B, 6)`` tokens and gives
logits ``(B, 6, 8)`` over the vocabulary ``0 = SOS (same id as NA), 1..5 = edits, 6 = EOS,
7 = PAD``.

* :class:`SeqFakeFormer` (Shao et al., ECCV 2022): a CNN, a 1x1 projection to ``d``, 2-D sine
  positions, a pre-norm transformer encoder, and an autoregressive decoder whose cross-attention
  adds a Gaussian bias around a predicted reference point on the feature grid (the "spatially
  enhanced" cross-attention, :class:`GaussianCrossAttention`).
* :class:`MMNet` (Xia et al., TIFS 2024), reconstructed (no code was released; see README): the
  same decoder, reading three backbone scales through one Gaussian cross-attention each, fused by
  learned gates (multi-scale spatial collaboration); a second decoder that reads the sequence
  backwards, both scoring the candidates at inference (sequential collaboration); a multi-label
  head (which edits are present, order-free); and a recovery decoder that reconstructs the
  original face from the forged one as a residual, conditioned on the decoded sequence.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SOS, EOS, PAD = 0, 6, 7
VOCAB = 8
STEPS = 5  # edits per sequence
POSITIONS = STEPS + 1  # decoder positions: SOS + 5 tokens / 5 edits + EOS


# -- token encoding ----------------------------------------------------------------------------------
def encode(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, 5)`` zero-padded edit ids -> ``(caption (B, 7), decoder input (B, 6), target (B, 6))``.

    The caption is SOS, the edits, EOS, then PAD; the decoder input is its first 6 tokens with EOS
    turned into PAD, the target its last 6 (the loss ignores PAD)."""
    seq = seq.long()
    b = seq.shape[0]
    length = (seq != 0).sum(1)
    caption = torch.full((b, POSITIONS + 1), PAD, dtype=torch.long, device=seq.device)
    caption[:, 0] = SOS
    pos = torch.arange(STEPS, device=seq.device)
    caption[:, 1:STEPS + 1] = torch.where(pos < length[:, None], seq, torch.full_like(seq, PAD))
    caption[torch.arange(b), length + 1] = EOS
    dec_in = caption[:, :POSITIONS].clone()
    dec_in[dec_in == EOS] = PAD
    return caption, dec_in, caption[:, 1:].clone()


def tokens_to_sequence(tokens: torch.Tensor) -> torch.Tensor:
    """Decoded tokens after SOS ``(B, 5)`` -> edit ids: everything from the first EOS/PAD on is 0."""
    tokens = tokens.long()
    stop = (tokens == EOS) | (tokens == PAD)
    after = stop.cumsum(1) > 0
    return torch.where(after, torch.zeros_like(tokens), tokens)


def reverse_sequence(seq: torch.Tensor) -> torch.Tensor:
    """Reverse each row's non-zero prefix: ``[1, 2, 4, 0, 0] -> [4, 2, 1, 0, 0]``."""
    seq = seq.long()
    length = (seq != 0).sum(1, keepdim=True)
    pos = torch.arange(seq.shape[1], device=seq.device)[None]
    src = (length - 1 - pos).clamp(min=0)
    return torch.where(pos < length, seq.gather(1, src), torch.zeros_like(seq))


# -- positions -----------------------------------------------------------------------------------------
def sine_positions(h: int, w: int, d: int, device=None, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-D sine encoding ``(h*w, d)``: d/2 features for y, then d/2 for x (DETR's)."""
    if d % 4:
        raise ValueError(f"the model width must be a multiple of 4 for 2-D sine positions, got {d}")
    eps, scale = 1e-6, 2 * math.pi
    y = (torch.arange(1, h + 1, device=device, dtype=torch.float32) / (h + eps) * scale)
    x = (torch.arange(1, w + 1, device=device, dtype=torch.float32) / (w + eps) * scale)
    half = d // 2
    dim_t = temperature ** (2 * (torch.arange(half, device=device) // 2) / half)
    py, px = y[:, None] / dim_t, x[:, None] / dim_t  # (h, half), (w, half)
    py = torch.stack([py[:, 0::2].sin(), py[:, 1::2].cos()], dim=2).flatten(1)
    px = torch.stack([px[:, 0::2].sin(), px[:, 1::2].cos()], dim=2).flatten(1)
    return torch.cat([py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)], dim=2).reshape(h * w, d)


def grid_coords(h: int, w: int, device=None) -> torch.Tensor:
    """Cell coordinates ``(h*w, 2)`` as ``(x, y)`` cell indices, row-major (how tokens are flattened)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


# -- attention -----------------------------------------------------------------------------------------
class GaussianCrossAttention(nn.Module):
    """Multi-head cross-attention with a Gaussian bias around a reference point on the feature grid.

    For head ``h``, query ``t`` and grid cell ``g``, the logit ``q.k / sqrt(d_h)`` gains
    ``-(s_x (c_x - g_x)^2 + s_y (c_y - g_y)^2) / smooth`` before the softmax, where ``c`` is the
    reference point (in cell units) plus a per-head offset predicted from the query, and ``s`` a
    per-head, per-axis scale predicted from the query and squared (initialised to 1). With
    ``smooth = inf`` it is plain multi-head attention.
    """

    def __init__(self, d: int, heads: int, dropout: float = 0.0, smooth: float = 4.0) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"model width {d} is not divisible by {heads} heads")
        self.d, self.heads, self.smooth = d, heads, smooth
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.offset = nn.Linear(d, 2 * heads)
        self.scale = nn.Linear(d, 2 * heads)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        nn.init.zeros_(self.scale.weight)
        nn.init.ones_(self.scale.bias)
        self.drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None  # (B, heads, T, S) of the last call, for tests

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                ref: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``query (B, T, d)``, ``memory`` and ``pos (B, S, d)``, ``ref (B, T, 2)`` in cell units,
        ``grid (S, 2)`` the cells' coordinates -> ``(B, T, d)``."""
        b, t, _ = query.shape
        s, h, dh = memory.shape[1], self.heads, self.d // self.heads
        q = self.q(query + query_pos).view(b, t, h, dh).transpose(1, 2)
        k = self.k(memory + pos).view(b, s, h, dh).transpose(1, 2)
        v = self.v(memory).view(b, s, h, dh).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, h, T, S)
        if math.isfinite(self.smooth):
            centre = ref[:, :, None, :] + self.offset(query).view(b, t, h, 2)  # (B, T, h, 2)
            scale = self.scale(query).view(b, t, h, 2).square()
            diff = centre.transpose(1, 2)[:, :, :, None, :] - grid[None, None, None]  # (B, h, T, S, 2)
            bias = -(scale.transpose(1, 2)[:, :, :, None, :] * diff.square()).sum(-1) / self.smooth
            logits = logits + bias
        attn = logits.softmax(-1)
        self.last_attention = attn.detach()
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(b, t, self.d)
        return self.out(out)


def _ffn(d: int, width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(width, d))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention (positions added to queries and keys) and feed-forward."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = _ffn(d, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.attn(y + pos, y + pos, y, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, one Gaussian cross-attention per memory scale (outputs mixed by
    softmax gates computed from the query when there are several), and feed-forward."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, smooth: float, scales: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross = nn.ModuleList(GaussianCrossAttention(d, heads, dropout, smooth) for _ in range(scales))
        self.gate = nn.Linear(d, scales) if scales > 1 else None
        self.ffn = _ffn(d, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, query_pos, memories, causal, pad, ref):
        y = self.norm1(x)
        x = x + self.drop(self.self_attn(y + query_pos, y + query_pos, y, attn_mask=causal,
                                         key_padding_mask=pad, need_weights=False)[0])
        y = self.norm2(x)
        outs = [attn(y, query_pos, mem, pos, ref * (size - 1), grid)
                for attn, (mem, pos, grid, size) in zip(self.cross, memories)]
        if self.gate is None:
            mixed = outs[0]
        else:
            g = self.gate(y).softmax(-1)  # (B, T, scales)
            mixed = sum(g[..., i:i + 1] * o for i, o in enumerate(outs))
        x = x + self.drop(mixed)
        return x + self.drop(self.ffn(self.norm3(x)))


class SequenceDecoder(nn.Module):
    """Token + learned position embeddings, a reference-point MLP, decoder layers, final norm, head."""

    def __init__(self, d: int, heads: int, layers: int, ffn: int, dropout: float, smooth: float,
                 scales: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d, padding_idx=PAD)
        self.position = nn.Embedding(POSITIONS, d)
        self.embed_norm = nn.LayerNorm(d, eps=1e-12)
        self.embed_drop = nn.Dropout(dropout)
        self.ref = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d), nn.ReLU(inplace=True),
                                 nn.Linear(d, 2))
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn, dropout, smooth, scales) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, 2 * d),
                                  nn.ReLU(inplace=True), nn.Linear(2 * d, VOCAB))

    def forward(self, tokens: torch.Tensor, memories: list) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B, T <= 6)`` -> ``(logits (B, T, 8), hidden (B, T, d))``; PAD positions are
        key-masked, and position ``t`` sees positions ``<= t`` only."""
        b, t = tokens.shape
        qpos = self.position.weight[:t][None].expand(b, -1, -1)
        x = self.embed_drop(self.embed_norm(self.embed(tokens) + qpos))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), diagonal=1)
        pad = tokens == PAD
        ref = self.ref(x + qpos).sigmoid()  # normalised (x, y); each scale rescales it to its grid
        for layer in self.layers:
            x = layer(x, qpos, memories, causal, pad, ref)
        hidden = self.norm(x)
        return self.head(hidden), hidden


# -- backbones -----------------------------------------------------------------------------------------
class TinyPyramid(nn.Module):
    """Four stride-2 conv stages after a stride-2 stem (strides 4, 8, 16, 32), for tests and quick runs."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True))
        chans = [width, width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                          nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
            for cin, cout in zip(chans[:-1], chans[1:]))
        self.channels = chans[1:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Pyramid(nn.Module):
    """The backbone's four stages (strides 4, 8, 16, 32; ``output_stride=16`` dilates the last), from
    ImageNet-normalised input. ``arch``: ``tiny`` or a timm ResNet name."""

    def __init__(self, arch: str = "resnet18", output_stride: int = 32, width: int = 16, **timm_kwargs) -> None:
        super().__init__()
        from visec.models.backbones import IMAGENET_MEAN, IMAGENET_STD

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if arch == "tiny":
            self.body: nn.Module = TinyPyramid(width)
            self.channels = list(self.body.channels)
        else:
            import timm

            self.body = timm.create_model(arch, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4),
                                          output_stride=output_stride, **timm_kwargs)
            self.channels = list(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body((x - self.mean) / self.std))


# -- recovery ------------------------------------------------------------------------------------------
class RecoveryDecoder(nn.Module):
    """A U-Net-style decoder from the backbone's four stages (and the input) to a residual image,
    each stage modulated (FiLM) by a sequence embedding. The last convolution starts at zero, so an
    untrained branch returns the forged input unchanged."""

    def __init__(self, channels: Sequence[int], cond: int, width: int = 32) -> None:
        super().__init__()
        widths = [width * 2 ** min(i, 2) for i in range(len(channels))]  # s4, s8, s16, s32
        self.lateral = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(channels, widths))
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i] + widths[i + 1], widths[i], 3, padding=1), nn.ReLU(True))
            for i in range(len(channels) - 1))
        self.film = nn.ModuleList(nn.Linear(cond, 2 * w) for w in widths)
        for f in self.film:
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)
        self.final = nn.Sequential(nn.Conv2d(widths[0] + 3, width, 3, padding=1), nn.ReLU(True),
                                   nn.Conv2d(width, 3, 3, padding=1))
        nn.init.zeros_(self.final[-1].weight)
        nn.init.zeros_(self.final[-1].bias)

    def _modulate(self, x: torch.Tensor, i: int, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is None:
            return x
        gamma, beta = self.film[i](cond).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]

    def forward(self, image: torch.Tensor, feats: list[torch.Tensor], cond: torch.Tensor | None) -> torch.Tensor:
        x = self._modulate(self.lateral[-1](feats[-1]), len(feats) - 1, cond)
        for i in range(len(feats) - 2, -1, -1):
            skip = self._modulate(self.lateral[i](feats[i]), i, cond)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fuse[i](torch.cat([skip, x], 1))
        x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return (image + self.final(torch.cat([x, image], 1))).clamp(0, 1)


# -- the two models ------------------------------------------------------------------------------------
class SequenceDetector(nn.Module):
    """What SeqFakeFormer and MMNet share: backbone, per-scale projection + positions (+ scale
    embedding), a shared encoder over all scales' tokens, a forward decoder, and greedy decoding."""

    def __init__(self, backbone: Pyramid, scales: Sequence[int], d: int = 256, heads: int = 4,
                 enc_layers: int = 2, dec_layers: int = 2, ffn: int = 512, dropout: float = 0.1,
                 smooth: float = 4.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.scales = tuple(scales)  # which stages (0..3 = strides 4..32) the encoder reads
        self.proj = nn.ModuleList(nn.Conv2d(backbone.channels[s], d, 1) for s in self.scales)
        self.scale_embed = nn.Parameter(torch.zeros(len(self.scales), d)) if len(self.scales) > 1 else None
        self.encoder = nn.ModuleList(EncoderLayer(d, heads, ffn, dropout) for _ in range(enc_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder = SequenceDecoder(d, heads, dec_layers, ffn, dropout, smooth, scales=len(self.scales))
        self.d = d

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(images)

    def encode(self, feats: list[torch.Tensor]) -> list:
        """Per scale ``(memory (B, S, d), pos (B, S, d), grid (S, 2), size (2,))`` after the encoder."""
        tokens, poss, shapes = [], [], []
        for i, (s, proj) in enumerate(zip(self.scales, self.proj)):
            f = proj(feats[s])
            b, d, h, w = f.shape
            pos = sine_positions(h, w, d, device=f.device)[None].expand(b, -1, -1)
            if self.scale_embed is not None:
                pos = pos + self.scale_embed[i]
            tokens.append(f.flatten(2).transpose(1, 2))
            poss.append(pos)
            shapes.append((h, w))
        x, pos = torch.cat(tokens, 1), torch.cat(poss, 1)
        for layer in self.encoder:
            x = layer(x, pos)
        x = self.encoder_norm(x)
        out, start = [], 0
        for h, w in shapes:
            size = torch.tensor([w, h], dtype=x.dtype, device=x.device)
            out.append((x[:, start:start + h * w], pos[:, start:start + h * w], grid_coords(h, w, x.device), size))
            start += h * w
        return out

    @staticmethod
    def _step_logits(logits: torch.Tensor) -> torch.Tensor:
        """Greedy choices are edits or EOS: SOS and PAD are never a next token."""
        masked = logits.clone()
        masked[..., SOS] = float("-inf")
        masked[..., PAD] = float("-inf")
        return masked

    def greedy(self, decoder: SequenceDecoder, memories: list, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding: ``(sequence (B, 5), summed log-probability (B,))``. Each row stops
        at its own EOS; rows that stopped keep PAD, which the others never see (key-masked)."""
        tokens = torch.full((batch, POSITIONS), PAD, dtype=torch.long, device=device)
        tokens[:, 0] = SOS
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        score = torch.zeros(batch, device=device)
        for i in range(STEPS):
            logits, _ = decoder(tokens[:, :i + 1], memories)
            logp = self._step_logits(logits[:, i]).log_softmax(-1)
            nxt = logp.argmax(-1)
            score = score + torch.where(done, torch.zeros_like(score), logp.gather(1, nxt[:, None])[:, 0])
            stop = nxt == EOS
            write = ~done & ~stop
            tokens[:, i + 1] = torch.where(write, nxt, tokens[:, i + 1])
            done = done | stop
            if bool(done.all()):
                break
        return tokens_to_sequence(tokens[:, 1:]), score

    @staticmethod
    def sequence_logprob(decoder: SequenceDecoder, memories: list, seq: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probability of whole sequences (their edits and EOS) under ``decoder``."""
        _, dec_in, target = encode(seq)
        logits, _ = decoder(dec_in, memories)
        logp = SequenceDetector._step_logits(logits).log_softmax(-1)
        keep = target != PAD
        picked = logp.gather(2, target.clamp(max=VOCAB - 1)[..., None])[..., 0]
        return torch.where(keep, picked, torch.zeros_like(picked)).sum(1)


class SeqFakeFormer(SequenceDetector):
    """The ECCV'22 baseline: one scale (the backbone's last stage), one forward decoder."""

    def __init__(self, backbone: Pyramid, **kw) -> None:
        super().__init__(backbone, scales=(3,), **kw)

    def forward(self, images: torch.Tensor, dec_in: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, hidden = self.decoder(dec_in, self.encode(self.features(images)))
        return {"logits": logits, "hidden": hidden}

    @torch.no_grad()
    def generate(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        memories = self.encode(self.features(images))
        seq, score = self.greedy(self.decoder, memories, images.shape[0], images.device)
        return {"sequence": seq, "score": score}


class MMNet(SequenceDetector):
    """MMNet, reconstructed (see the module docstring and README); every part can be switched off:
    ``multiscale`` (stages 2-4 instead of 4), ``backward`` (the reverse decoder and its rescoring),
    ``multilabel`` (the order-free head), ``recovery`` (the face-recovery decoder)."""

    def __init__(self, backbone: Pyramid, *, multiscale: bool = True, backward: bool = True,
                 multilabel: bool = True, recovery: bool = True, recovery_width: int = 32, **kw) -> None:
        super().__init__(backbone, scales=(1, 2, 3) if multiscale else (3,), **kw)
        d = self.d
        dec = self.decoder
        self.backward_decoder = (SequenceDecoder(d, dec.layers[0].self_attn.num_heads, len(dec.layers),
                                                 dec.layers[0].ffn[0].out_features, dec.embed_drop.p,
                                                 dec.layers[0].cross[0].smooth, scales=len(self.scales))
                                 if backward else None)
        self.multilabel_head = nn.Linear(d, STEPS) if multilabel else None
        self.recovery = RecoveryDecoder(backbone.channels, d, recovery_width) if recovery else None

    @staticmethod
    def _condition(hidden: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        """The sequence embedding: the forward decoder's states averaged over its non-PAD positions."""
        keep = (dec_in != PAD).float()[..., None]
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, images: torch.Tensor, dec_in: torch.Tensor,
                dec_in_backward: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        memories = self.encode(feats)
        logits, hidden = self.decoder(dec_in, memories)
        out = {"logits": logits, "hidden": hidden}
        if self.backward_decoder is not None and dec_in_backward is not None:
            out["logits_backward"] = self.backward_decoder(dec_in_backward, memories)[0]
        if self.multilabel_head is not None:
            pooled = torch.cat([m for m, *_ in memories], 1).mean(1)
            out["multilabel"] = self.multilabel_head(pooled)
        if self.recovery is not None:
            out["recovered"] = self.recovery(images, feats, self._condition(hidden, dec_in))
        return out

    @torch.no_grad()
    def generate(self, images: torch.Tensor, rerank: bool = True, recover: bool = True) -> dict[str, torch.Tensor]:
        """Greedy forward decoding; with the backward decoder and ``rerank``, the reversed backward
        greedy result competes with it, each candidate scored by both decoders together; then the
        recovered face, conditioned on the chosen sequence."""
        feats = self.features(images)
        memories = self.encode(feats)
        b = images.shape[0]
        seq, score = self.greedy(self.decoder, memories, b, images.device)
        out: dict[str, torch.Tensor] = {}
        if self.backward_decoder is not None and rerank:
            rev, _ = self.greedy(self.backward_decoder, memories, b, images.device)
            cand = reverse_sequence(rev)
            joint_f = (self.sequence_logprob(self.decoder, memories, seq)
                       + self.sequence_logprob(self.backward_decoder, memories, reverse_sequence(seq)))
            joint_b = (self.sequence_logprob(self.decoder, memories, cand)
                       + self.sequence_logprob(self.backward_decoder, memories, rev))
            take_b = joint_b > joint_f
            out["from_backward"] = take_b
            seq = torch.where(take_b[:, None], cand, seq)
            score = torch.where(take_b, joint_b, joint_f)
        out.update(sequence=seq, score=score)
        if self.recovery is not None and recover:
            _, dec_in, _ = encode(seq)
            _, hidden = self.decoder(dec_in, memories)
            out["recovered"] = self.recovery(images, feats, self._condition(hidden, dec_in))
        return out
