"""SeqFakeFormer / MMNet as pure modules: token encoding, decoder causality and PAD invariance, the
Gaussian cross-attention, batched greedy decoding, recovery at initialisation, and an overfit run."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from visec.methods.mmnet.torch_model import (EOS, PAD, SOS, GaussianCrossAttention, MMNet, Pyramid,
                                             SeqFakeFormer, SequenceDetector, encode, grid_coords,
                                             reverse_sequence, tokens_to_sequence)


def _tiny(cls=SeqFakeFormer, **kw):
    torch.manual_seed(0)
    return cls(Pyramid("tiny", width=8), d=32, heads=4, ffn=64, dropout=0.0, **kw).eval()


# -- token encoding -----------------------------------------------------------------------------
@pytest.mark.parametrize("seq,caption,dec_in,target", [
    ([1, 2, 4, 0, 0], [0, 1, 2, 4, 6, 7, 7], [0, 1, 2, 4, 7, 7], [1, 2, 4, 6, 7, 7]),
    ([0, 0, 0, 0, 0], [0, 6, 7, 7, 7, 7, 7], [0, 7, 7, 7, 7, 7], [6, 7, 7, 7, 7, 7]),
    ([5, 3, 1, 2, 4], [0, 5, 3, 1, 2, 4, 6], [0, 5, 3, 1, 2, 4], [5, 3, 1, 2, 4, 6]),
])
def test_encoding_table_of_the_notes(seq, caption, dec_in, target):
    c, i, t = encode(torch.tensor([seq]))
    assert c.tolist() == [caption] and i.tolist() == [dec_in] and t.tolist() == [target]


def test_decode_of_encode_is_identity_for_every_valid_sequence():
    seqs = [list(p) + [0] * (5 - k) for k in range(6) for p in itertools.product(range(1, 6), repeat=k)]
    seqs = torch.tensor(seqs)
    caption, _, _ = encode(seqs)
    assert torch.equal(tokens_to_sequence(caption[:, 1:6]), seqs)
    assert torch.equal(reverse_sequence(reverse_sequence(seqs)), seqs)
    assert reverse_sequence(torch.tensor([[1, 2, 4, 0, 0]])).tolist() == [[4, 2, 1, 0, 0]]


# -- decoder ------------------------------------------------------------------------------------
def test_decoder_is_causal():
    model = _tiny()
    x = torch.rand(2, 3, 32, 32)
    _, dec_in, _ = encode(torch.tensor([[1, 2, 3, 4, 5], [2, 3, 4, 5, 1]]))
    mem = model.encode(model.features(x))
    base, _ = model.decoder(dec_in, mem)
    for j in range(1, 6):
        changed = dec_in.clone()
        changed[:, j] = (changed[:, j] % 5) + 1
        logits, _ = model.decoder(changed, mem)
        assert torch.allclose(logits[:, :j], base[:, :j], atol=1e-6), j
        assert not torch.allclose(logits[:, j:], base[:, j:], atol=1e-6), j


def test_pad_positions_do_not_leak():
    """Whatever sits in PAD-masked positions, the logits of the real positions stay the same."""
    model = _tiny()
    x = torch.rand(2, 3, 32, 32)
    _, dec_in, target = encode(torch.tensor([[1, 2, 0, 0, 0], [3, 0, 0, 0, 0]]))
    mem = model.encode(model.features(x))
    base, _ = model.decoder(dec_in, mem)
    emb = model.decoder.embed
    with torch.no_grad():
        emb.weight[PAD] = torch.randn_like(emb.weight[PAD])  # PAD's embedding changed: masked anyway
    again, _ = model.decoder(dec_in, mem)
    keep = dec_in != PAD
    assert torch.allclose(again[keep], base[keep], atol=1e-6)


# -- Gaussian cross-attention -------------------------------------------------------------------
def test_gaussian_attention_without_bias_is_multihead_attention():
    torch.manual_seed(0)
    d, heads = 16, 4
    attn = GaussianCrossAttention(d, heads, smooth=math.inf).eval()
    ref = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]))
        ref.out_proj.weight.copy_(attn.out.weight)
        ref.out_proj.bias.copy_(attn.out.bias)
    q, qpos = torch.randn(2, 3, d), torch.randn(2, 3, d)
    mem, pos = torch.randn(2, 12, d), torch.randn(2, 12, d)
    out = attn(q, qpos, mem, pos, torch.rand(2, 3, 2) * 3, grid_coords(3, 4))
    expected = ref(q + qpos, mem + pos, mem, need_weights=False)[0]
    assert torch.allclose(out, expected, atol=1e-5)
    # a huge (but finite) temperature is the same attention to within float error
    attn.smooth = 1e9
    assert torch.allclose(attn(q, qpos, mem, pos, torch.rand(2, 3, 2) * 3, grid_coords(3, 4)), expected, atol=1e-4)


def test_sharp_gaussian_attends_to_the_reference_cell():
    torch.manual_seed(0)
    d = 8
    attn = GaussianCrossAttention(d, 2, smooth=0.01).eval()
    with torch.no_grad():
        attn.q.weight.zero_()
        attn.q.bias.zero_()  # zero content logits: only the Gaussian decides
    grid = grid_coords(4, 5)  # 20 cells, x in 0..4, y in 0..3
    ref = torch.tensor([[[3.2, 1.1], [0.4, 2.6]]])
    attn(torch.randn(1, 2, d), torch.zeros(1, 2, d), torch.randn(1, 20, d), torch.zeros(1, 20, d), ref, grid)
    a = attn.last_attention  # (1, heads, 2, 20)
    assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)))
    nearest = [int(((grid - r).square().sum(1)).argmin()) for r in ref[0]]
    assert a[0, :, 0].argmax(-1).tolist() == [nearest[0]] * 2
    assert a[0, :, 1].argmax(-1).tolist() == [nearest[1]] * 2
    assert float(a[0, :, 0, nearest[0]].min()) > 0.9


def test_gaussian_bias_changes_the_attention():
    """Deleting the bias (smooth -> inf) must change what a trained-like query attends to."""
    torch.manual_seed(1)
    attn = GaussianCrossAttention(8, 2, smooth=0.5).eval()
    args = (torch.randn(1, 2, 8), torch.zeros(1, 2, 8), torch.randn(1, 12, 8), torch.zeros(1, 12, 8),
            torch.tensor([[[0.0, 0.0], [3.0, 2.0]]]), grid_coords(3, 4))
    biased = attn(*args)
    attn.smooth = math.inf
    assert not torch.allclose(attn(*args), biased, atol=1e-4)


# -- greedy decoding ----------------------------------------------------------------------------
class _Scripted(SequenceDetector):
    """A detector whose decoder emits scripted tokens per row and step (no network)."""

    def __init__(self, script):
        torch.nn.Module.__init__(self)
        self.script = torch.tensor(script)

    def decoder_fn(self, tokens, memories):
        b, t = tokens.shape
        logits = torch.full((b, t, 8), -5.0)
        for r in range(b):
            for i in range(t):
                logits[r, i, self.script[r, i]] = 5.0
        return logits, None


@pytest.mark.parametrize("script,expected", [
    ([3, 1, EOS, 2, 2], [3, 1, 0, 0, 0]),
    ([EOS, 1, 1, 1, 1], [0, 0, 0, 0, 0]),
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),  # no EOS within 5 steps: 5 tokens kept
    ([PAD, 2, EOS, 1, 1], None),  # PAD and SOS are never chosen: the next best token is
])
def test_greedy_decoding_with_a_scripted_decoder(script, expected):
    det = _Scripted([script])
    seq, _ = det.greedy(det.decoder_fn, [], 1, "cpu")
    if expected is None:
        assert seq[0, 0].item() not in (SOS, PAD) and seq.shape == (1, 5)
    else:
        assert seq.tolist() == [expected]


def test_batched_greedy_equals_one_image_at_a_time():
    for model in (_tiny(), _tiny(MMNet)):
        x = torch.rand(6, 3, 32, 32)
        batched = model.generate(x)["sequence"]
        single = torch.cat([model.generate(x[i:i + 1])["sequence"] for i in range(6)])
        assert torch.equal(batched, single)


def test_shapes_and_token_counts():
    model = _tiny(MMNet)
    x = torch.rand(2, 3, 64, 64)
    mem = model.encode(model.features(x))
    assert [m.shape[1] for m, *_ in mem] == [8 * 8, 4 * 4, 2 * 2]  # strides 8, 16, 32
    _, dec_in, _ = encode(torch.tensor([[1, 0, 0, 0, 0], [2, 3, 0, 0, 0]]))
    out = model(x, dec_in, encode(reverse_sequence(torch.tensor([[1, 0, 0, 0, 0], [2, 3, 0, 0, 0]])))[1])
    assert out["logits"].shape == (2, 6, 8) and out["logits_backward"].shape == (2, 6, 8)
    assert out["multilabel"].shape == (2, 5) and out["recovered"].shape == (2, 3, 64, 64)
    single = _tiny(MMNet, multiscale=False, backward=False, multilabel=False, recovery=False)
    assert [m.shape[1] for m, *_ in single.encode(single.features(x))] == [4]
    assert set(single(x, dec_in)) == {"logits", "hidden"}


def test_untrained_recovery_is_the_identity_map():
    model = _tiny(MMNet)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.generate(x)["recovered"], x)


def test_rerank_picks_the_jointly_more_likely_candidate():
    model = _tiny(MMNet)
    x = torch.rand(4, 3, 32, 32)
    out = model.generate(x, rerank=True)
    plain = model.generate(x, rerank=False)["sequence"]
    with torch.no_grad():
        mem = model.encode(model.features(x))

        def joint(c):
            return (model.sequence_logprob(model.decoder, mem, c)
                    + model.sequence_logprob(model.backward_decoder, mem, reverse_sequence(c)))

        assert torch.all(joint(out["sequence"]) >= joint(plain) - 1e-4)
        assert torch.allclose(out["score"], joint(out["sequence"]), atol=1e-4)


# -- overfit -------------------------------------------------------------------------------------
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.2, 1.0], [1.0, 1.0, 0.1], [1.0, 0.2, 1.0]])


def ordered_squares(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images with up to 5 coloured squares; square k partly covers square k-1, so the order
    of the edits is visible (1.12 item 8 of the notes)."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.full((n, 3, size, size), 0.5)
    seqs = torch.zeros(n, 5, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(0, 6, (1,), generator=g))
        kinds = torch.randperm(5, generator=g)[:k] + 1
        y, x = [int(v) for v in torch.randint(4, size - 16, (2,), generator=g)]
        for j, c in enumerate(kinds.tolist()):
            imgs[i, :, y:y + 10, x:x + 10] = COLOURS[c - 1][:, None, None]
            y = min(size - 10, max(0, y + int(torch.randint(-5, 6, (1,), generator=g))))
            x = min(size - 10, max(0, x + int(torch.randint(-5, 6, (1,), generator=g))))
            seqs[i, j] = c
    return imgs, seqs


def test_tiny_model_overfits_ordered_edits(one_torch_thread):
    from visec.metrics.sequence import csm

    torch.manual_seed(0)
    imgs, seqs = ordered_squares(32)
    model = SeqFakeFormer(Pyramid("tiny", width=8), d=32, heads=4, ffn=64, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    _, dec_in, target = encode(seqs)
    for _ in range(300):
        logits = model(imgs, dec_in)["logits"]
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pred = model.generate(imgs)["sequence"]
    assert float(loss) < 0.05
    assert csm(seqs.numpy(), pred.numpy()) >= 0.9
