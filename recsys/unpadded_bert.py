"""A BERT forward pass over the real tokens only (padding removal, as in NVIDIA FasterTransformer's and
ByteDance's EffectiveTransformer's "remove padding"), for inference.

Why: on CPU the linear layers are about three quarters of MiniLM's time (torch.profiler: `aten::addmm` 74 %,
GELU 9 %, attention 7 %), and they cost the same per token whether it is a word or padding. A batch padded to
its longest text spends them on padding too: 31 % more tokens than the texts hold for request-sized batches of
20 MovieLens item texts, 85 % with sentence-transformers' padding. Here the tokens of every text in a batch
form one (tokens, hidden) matrix for the embeddings, every linear layer, layer norm and activation; only the
attention, which needs the texts apart, runs on a padded (texts, heads, longest, head size) layout with a key
mask: its inputs are scattered there and its output gathered back.

The layers are the model's own modules (weights, activation, layer norm epsilon); what is reimplemented is
HuggingFace's `BertModel.forward` for absolute positions and token type 0: embeddings = (word + token type 0)
+ position, then per layer LayerNorm(dense(attention) + h) and LayerNorm(dense(act(dense(h))) + h). The vectors
agree with the padded forward to float32 rounding (tests/recsys/test_unpadded_bert.py). Under bf16 autocast
(recsys.device.inference_precision) the projections come out bf16 and the padded attention layout takes
their dtype; layer norms and the pooling stay float32.

The guard: this reads transformers' BERT internals (module attributes below), and `transformers` is not pinned
to one version. So before a model is run unpadded, `supports` checks that every attribute read here exists
(`REQUIRED`), then runs one tiny probe batch through both this forward and the model's own padded forward in
float32 and compares them. If either check fails (a transformers release renamed a module or changed what
BertModel computes), it warns once, naming the transformers version and what failed, and answers False: the
caller (recsys.encoder) then uses the standard padded forward, which is slower but correct. The result is
remembered per model object, so the probe runs once per loaded model (about a millisecond for MiniLM).
"""
from __future__ import annotations

import logging
import warnings
import weakref

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# What token_states reads from a transformers BertModel (attribute paths; "layer." = every encoder layer).
REQUIRED = ("embeddings.word_embeddings", "embeddings.token_type_embeddings", "embeddings.position_embeddings",
            "embeddings.LayerNorm", "encoder.layer",
            "layer.attention.self.num_attention_heads", "layer.attention.self.attention_head_size",
            "layer.attention.self.query", "layer.attention.self.key", "layer.attention.self.value",
            "layer.attention.output.dense", "layer.attention.output.LayerNorm",
            "layer.intermediate.dense", "layer.intermediate.intermediate_act_fn",
            "layer.output.dense", "layer.output.LayerNorm")
# Probe: two texts of different lengths, so padding, the key mask and the positions are all exercised.
_PROBE_LENGTHS = (7, 3)
_checked: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def supports(model: torch.nn.Module) -> bool:
    """Whether `mean_pooled` computes exactly this model's forward: a plain BERT encoder (absolute positions,
    not a decoder), in eval mode, whose transformers internals are what this module reads (the guard in the
    module docstring)."""
    from transformers import BertModel

    cfg = getattr(model, "config", None)
    if not (isinstance(model, BertModel) and not model.training and not getattr(cfg, "is_decoder", False)
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"):
        return False
    ok = _checked.get(model)
    if ok is None:
        problem = structure_problem(model) or probe_problem(model)
        ok = problem is None
        _checked[model] = ok
        if not ok:
            _warn_once(problem)
    return ok


def structure_problem(model: torch.nn.Module) -> str | None:
    """The first attribute in REQUIRED that `model` lacks, as a sentence; None when all are there."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    for path in REQUIRED:
        if path.startswith("layer."):
            owners, attrs = [(f"encoder.layer[{i}]", x) for i, x in enumerate(layers or [])], path.split(".")[1:]
        else:
            owners, attrs = [("BertModel", model)], path.split(".")
        for name, obj in owners:
            for k, attr in enumerate(attrs):
                if not hasattr(obj, attr):
                    return f"{name} has no {'.'.join(attrs[:k + 1])}"
                obj = getattr(obj, attr)
    if not layers:
        return "BertModel.encoder.layer is empty"
    return None


def probe_problem(model: torch.nn.Module) -> str | None:
    """Run a tiny batch through `token_states` and the model's own padded forward (float32, no autocast);
    None when their mean-pooled vectors agree to float32 rounding, else what differed."""
    vocab = int(model.config.vocab_size)
    ids = [[(7 * i + 3 * j + 1) % vocab for j in range(n)] for i, n in enumerate(_PROBE_LENGTHS)]
    width = max(_PROBE_LENGTHS)
    device = model.embeddings.word_embeddings.weight.device
    padded = torch.zeros(len(ids), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(ids), width, dtype=torch.long, device=device)
    for i, row in enumerate(ids):
        padded[i, :len(row)] = torch.tensor(row, device=device)
        mask[i, :len(row)] = 1
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            ours = mean_pooled(model, ids)
            hidden = model(input_ids=padded, attention_mask=mask).last_hidden_state.float()
    except Exception as exc:   # any failure of the reimplementation means: do not use it
        return f"the unpadded forward failed on a probe batch ({type(exc).__name__}: {exc})"
    m = mask.unsqueeze(-1).float()
    ref = (hidden * m).sum(1) / m.sum(1)
    tol = 1e-4 if model.embeddings.word_embeddings.weight.dtype == torch.float32 else 3e-2
    err = float((ours.float() - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not err <= tol * scale:
        return f"the unpadded forward differs from BertModel's on a probe batch (max abs difference {err:.3g})"
    return None


def _warn_once(problem: str) -> None:
    import transformers

    msg = (f"recsys.unpadded_bert: {problem} under transformers {transformers.__version__}; using the standard "
           "padded forward instead (correct, slower). Pin transformers to a version the unpadded forward was "
           "tested with (tests/recsys/test_unpadded_bert.py) or update recsys/unpadded_bert.py.")
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def mean_pooled(model: torch.nn.Module, ids: list[list[int]]) -> torch.Tensor:
    """(len(ids), hidden) float32: the mean of the last layer's token states of each text (its token ids, no
    padding), as the padded forward with an attention mask gives them."""
    h, seg, lens = token_states(model, ids)
    summed = torch.zeros(len(ids), h.shape[1], dtype=torch.float32, device=h.device).index_add_(0, seg, h.float())
    return summed / lens.to(torch.float32)[:, None]


def token_states(model: torch.nn.Module, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last layer's token states of every text, one after the other: (total tokens, hidden) in the
    dtype the last layer norm gives (float32), each token's text index, and each text's token count."""
    device = model.embeddings.word_embeddings.weight.device
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    n, width, total = len(ids), int(lens.max()), int(lens.sum())
    starts = np.cumsum(lens) - lens
    position = np.arange(total) - np.repeat(starts, lens)
    segment = np.repeat(np.arange(n), lens)
    flat = np.fromiter((t for row in ids for t in row), dtype=np.int64, count=total)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    tokens, pos, seg = tensor(flat), tensor(position), tensor(segment)
    if int(lens.min()) == width:   # one length: the tokens already are the padded layout, and nothing is masked
        slot = key_mask = None
    else:
        slot = tensor(segment * width + position)            # each token's row in the padded layout
        key_mask = tensor(np.arange(width)[None, :] < lens[:, None]).view(n, 1, 1, width)

    emb = model.embeddings
    h = emb.word_embeddings(tokens) + emb.token_type_embeddings.weight[0]
    h = emb.LayerNorm(h + emb.position_embeddings(pos))
    for layer in model.encoder.layer:
        att = layer.attention.self
        heads, size = att.num_attention_heads, att.attention_head_size
        projected = (att.query(h), att.key(h), att.value(h))
        if slot is not None:
            padded = projected[0].new_zeros(3, n * width, heads * size)   # their dtype: bf16 under autocast
            for j, x in enumerate(projected):
                padded[j, slot] = x
            projected = padded
        q, k, v = (x.view(n, width, heads, size).transpose(1, 2) for x in projected)
        # older transformers releases have no `scaling` attribute; they scale by head size ** -0.5 too
        scale = getattr(att, "scaling", size ** -0.5)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)
        ctx = ctx.transpose(1, 2).reshape(n * width, heads * size)
        if slot is not None:
            ctx = ctx[slot]
        out = layer.attention.output
        h = out.LayerNorm(out.dense(ctx) + h)
        ffn = layer.output
        h = ffn.LayerNorm(ffn.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))) + h)
    return h, seg, tensor(lens)
