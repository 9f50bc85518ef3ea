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
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def supports(model: torch.nn.Module) -> bool:
    """Whether `mean_pooled` computes exactly this model's forward: a plain BERT encoder (absolute positions,
    not a decoder), in eval mode."""
    from transformers import BertModel

    cfg = getattr(model, "config", None)
    return (isinstance(model, BertModel) and not model.training and not getattr(cfg, "is_decoder", False)
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute")


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
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=att.scaling)
        ctx = ctx.transpose(1, 2).reshape(n * width, heads * size)
        if slot is not None:
            ctx = ctx[slot]
        out = layer.attention.output
        h = out.LayerNorm(out.dense(ctx) + h)
        ffn = layer.output
        h = ffn.LayerNorm(ffn.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))) + h)
    return h, seg, tensor(lens)
