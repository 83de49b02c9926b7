"""``gr``: generative regression (Ma et al., WWW 2026, arXiv 2412.20211), served as a histogram.

The paper writes a watch time as a short sequence of tokens over a vocabulary taken from the
training labels and predicts it with a Transformer decoder that reads the features' encoding,
one token at a time; the prediction is a windowed soft-argmax of each step's token
probabilities, summed over the steps. Training is teacher forcing plus a curriculum in which
more and more decoder inputs are the model's own probability-weighted token embedding instead
of the true token's ("embedding mixup"), with a Huber loss on the soft-argmax prediction
beside the cross-entropy.

Here the token sequence has a fixed length and is hierarchical, so that a fixed-shape ONNX
graph can serve the decoder's distribution:

1. Vocabulary (training days): ``N = K_1 * ... * K_L`` leaves at the ``k / N`` quantiles of
   the labels (the rule and the open last leaf of :func:`model_export.models.tpm.tpm_edges`).
   Step ``t`` has ``K_t`` tokens; token ``k`` at step ``t`` picks child ``k`` of the node the
   earlier tokens chose, so step 1 picks one of ``K_1`` coarse slots and later steps refine
   inside it. A label's tokens are the mixed-radix digits of its leaf's index.
2. Token values: node ``v`` at depth ``t`` has the midpoint ``c(v)`` of its seconds interval;
   token ``k`` after prefix node ``p`` is worth ``c(child k of p) - c(p)`` (``c(root) = 0``).
   The values along a label's sequence sum to its leaf's midpoint: the encoding is lossless
   up to half a leaf's width.
3. Network: the shared trunk, whose head gives ``M`` memory vectors of width ``d``, the
   decoder's encoder states; a post-norm Transformer decoder (causal self-attention,
   cross-attention to the memory, feed-forward) over the tokens, one output layer per step.
4. Served: the histogram over the depth-2 nodes (``K_1 * K_2`` buckets), mass
   ``P(step 1 = j) * P(step 2 = k | j)``, step 2 computed for every coarse prefix in one
   batched pass; its per-row ``point`` is the greedy decode's windowed soft-argmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel, per_row
from model_export.models.softmax import bucket_index
from model_export.models.tpm import tpm_edges

DEFAULT_TOKENS = (16, 4, 4)
"""Tokens per decoding step: 16 coarse slots, then two refinements of 4 (256 leaves)."""

LEAF_MIN_GAP_S = 0.01
"""Smallest leaf width; one label in ten is exactly 0 s, so the lowest quantiles coincide."""


# ----- vocabulary and label encoding (numpy, training days) ------------------------------------


def open_end(y: np.ndarray, lo: float, min_gap: float) -> float:
    """Nominal end of an open last bucket starting at ``lo``: its midpoint is the mean of the
    labels in it (the histogram family's open bucket then has that mean)."""
    tail = np.asarray(y, dtype=np.float64)
    tail = tail[tail >= lo]
    top = 2.0 * float(tail.mean()) - lo if tail.size else lo + 1.0
    return round(max(top, lo + min_gap), 3)


def gr_vocabulary(
    y: np.ndarray, tokens: Sequence[int] = DEFAULT_TOKENS, min_gap: float = LEAF_MIN_GAP_S
) -> tuple[list[float], list[float]]:
    """Leaf edges ``(N + 1,)`` and the served depth-2 bucket edges ``(K_1 K_2 + 1,)``, seconds.

    Leaves are the equal-frequency buckets of the labels (``tpm_edges`` with ``N`` leaves);
    the depth-2 buckets group ``K_3 * ... * K_L`` consecutive leaves, their last one open with
    its own nominal end (the mean of the labels in it is its midpoint).
    """
    n_leaves = math.prod(tokens)
    leaves = tpm_edges(np.asarray(y, dtype=np.float64), n_leaves, min_gap)
    stride = n_leaves // (tokens[0] * tokens[1])
    cuts = leaves[:-1:stride]
    return leaves, [*cuts, open_end(y, cuts[-1], min_gap)]


def encode_labels(y_s: np.ndarray, leaf_edges: Sequence[float], tokens: Sequence[int]) -> np.ndarray:
    """Each label's token sequence, (n, L): the digits of its leaf index, coarse first.

    The leaf is the histogram family's bucket of the label (interior edges at or below it).
    """
    edges = np.asarray(leaf_edges, dtype=np.float64)
    leaf = np.searchsorted(edges[1:-1], np.asarray(y_s, dtype=np.float64), side="right")
    out = np.empty((leaf.shape[0], len(tokens)), dtype=np.int64)
    for t in range(len(tokens) - 1, -1, -1):
        out[:, t] = leaf % tokens[t]
        leaf = leaf // tokens[t]
    return out


def decode_tokens(
    seq: np.ndarray, leaf_edges: Sequence[float], tokens: Sequence[int]
) -> np.ndarray:
    """Seconds of token sequences, (n,): the midpoint of the leaf they name."""
    leaf = np.zeros(seq.shape[0], dtype=np.int64)
    for t, k in enumerate(tokens):
        leaf = leaf * k + seq[:, t]
    edges = np.asarray(leaf_edges, dtype=np.float64)
    return 0.5 * (edges[leaf] + edges[leaf + 1])


def windowed_soft_argmax(p: torch.Tensor, values: torch.Tensor, half: int) -> torch.Tensor:
    """``sum_k p_k v_k / sum_k p_k`` over the tokens within ``half`` of the most probable.

    The paper's decoding: a soft-argmax restricted to a window around the argmax, so that a
    second mode far away does not drag the step's value between the two. Renormalised over
    the window (the values here are offsets, not all non-negative).
    """
    k = torch.argmax(p, dim=-1, keepdim=True)
    idx = torch.arange(p.shape[-1], device=p.device).expand_as(p)
    inside = ((idx >= k - half) & (idx <= k + half)).to(p.dtype)
    w = p * inside
    return (w * values).sum(dim=-1) / w.sum(dim=-1)


# ----- the decoder ------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention of one query position over a few keys, without batched matmuls.

    With at most a handful of keys (the earlier tokens, or the few memory vectors) a batched
    matmul per row and head is thousands of tiny products; here the per-head dot products are
    an elementwise product summed per head by one (d, h) matrix, and the weights spread back
    to the width by its transpose, so every product is one GEMM over all rows at once (in
    torch and in ONNX alike). Queries ``(..., d)``, keys and values ``(..., S, d)``, leading
    axes broadcasting.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of {n_heads} heads")
        head_dim = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        member = (torch.arange(d_model).unsqueeze(1) // head_dim == torch.arange(n_heads)).float()
        self.register_buffer("pool", member / math.sqrt(head_dim), persistent=False)
        self.register_buffer("spread", member.T.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        pool: torch.Tensor = self.pool  # type: ignore[assignment]
        spread: torch.Tensor = self.spread  # type: ignore[assignment]
        scores = (self.q(x).unsqueeze(-2) * keys) @ pool.to(x.dtype)  # (..., S, h)
        weights = torch.softmax(scores, dim=-2) @ spread.to(x.dtype)  # (..., S, d)
        return self.out((weights * values).sum(dim=-2))


class DecoderLayer(nn.Module):
    """Post-norm decoder block, as in the released code: self-attention over the positions so
    far, attention to the memory, feed-forward, each with dropout, a residual and a LayerNorm.

    It runs one position at a time; each position's keys and values stay in ``cache``, so a
    position sees itself and the earlier ones only (causal by construction).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = Attention(d_model, n_heads)
        self.cross_attention = Attention(d_model, n_heads)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def memory_keys(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory's keys and values for the cross-attention, (n, 1, M, d)."""
        m = memory.unsqueeze(1)
        return self.cross_attention.k(m), self.cross_attention.v(m)

    def step(
        self,
        x: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        memory_kv: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """The block's output at the next position, ``x`` (n, P, d): P parallel prefixes."""
        cache.append((self.self_attention.k(x), self.self_attention.v(x)))
        keys = torch.stack([k.expand_as(x) for k, _ in cache], dim=-2)
        values = torch.stack([v.expand_as(x) for _, v in cache], dim=-2)
        x = self.norms[0](x + self.drop(self.self_attention(x, keys, values)))
        x = self.norms[1](x + self.drop(self.cross_attention(x, *memory_kv)))
        return self.norms[2](x + self.drop(self.ffn(x)))


class DecodeState:
    """One decoding run: the memory's keys per block and each block's cache of positions."""

    def __init__(self, layers: nn.ModuleList, memory: torch.Tensor) -> None:
        self.memory_kv = [layer.memory_keys(memory) for layer in layers]  # type: ignore[operator]
        self.caches: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in layers]


class TokenDecoder(nn.Module):
    """Token embeddings (each step its own ids, plus a start token), the decoder blocks and
    one output layer per step."""

    def __init__(
        self, tokens: Sequence[int], d_model: int, n_layers: int, n_heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = tuple(tokens)
        self.base = [sum(self.tokens[:t]) for t in range(len(self.tokens))]
        self.start_id = sum(self.tokens)
        self.embedding = nn.Embedding(self.start_id + 1, d_model)
        nn.init.normal_(self.embedding.weight, std=0.05)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, dropout) for _ in range(n_layers)
        )
        self.heads = nn.ModuleList(nn.Linear(d_model, k) for k in self.tokens)
        self.drop = nn.Dropout(dropout)

    def step_embeddings(self, t: int) -> torch.Tensor:
        """The embeddings of step ``t``'s tokens, (K_t, d)."""
        return self.embedding.weight[self.base[t] : self.base[t] + self.tokens[t]]

    def start(self, n: int) -> torch.Tensor:
        """The start token's embedding for ``n`` rows, (n, 1, d)."""
        d = self.embedding.weight.shape[1]
        return self.embedding.weight[self.start_id :].unsqueeze(0).expand(n, 1, d)

    def begin(self, memory: torch.Tensor) -> DecodeState:
        """A new decoding run over ``memory`` (n, M, d)."""
        return DecodeState(self.layers, memory)

    def step(self, state: DecodeState, x: torch.Tensor) -> torch.Tensor:
        """Hidden state at the next position of input embeddings ``x`` (n, P, d)."""
        h = self.drop(x)
        for layer, cache, memory_kv in zip(self.layers, state.caches, state.memory_kv, strict=True):
            h = layer.step(h, cache, memory_kv)  # type: ignore[operator]
        return h

    def forced(self, memory: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each step's logits (n, K_t) for given inputs after the start token (n, d) each."""
        state = self.begin(memory)
        xs = [self.start(memory.shape[0]), *(x.unsqueeze(1) for x in inputs)]
        return [self.heads[t](self.step(state, x))[:, 0] for t, x in enumerate(xs)]


# ----- the model --------------------------------------------------------------------------------


class GenerativeRegression(BaselineModel):
    """``gr``: the trunk's memory decoded into a hierarchical token sequence.

    Loss per row (scaled units): ``sum_t CE(step t)`` (with teacher forcing, exactly
    ``-log P(leaf)``) ``+ huber_weight * Huber(soft-argmax point - y)``, the released code's
    two terms. While training, each decoder input after the start token is, with probability
    ``mixup_share(step)`` (rising linearly from 0 to ``mixup_max`` over ``mixup_ramp_steps``
    optimiser steps), the model's own probability-weighted embedding of that step's tokens
    from a first, teacher-forced pass instead of the true token's: the curriculum embedding
    mixup.
    """

    name = "gr"
    family = "histogram"
    n_memory: ClassVar[int] = 4
    n_heads: ClassVar[int] = 4
    decoder_dropout: ClassVar[float] = 0.1
    window: ClassVar[int] = 3
    huber_weight: ClassVar[float] = 0.1
    huber_delta: ClassVar[float] = 1.0
    mixup_max: ClassVar[float] = 0.5
    mixup_ramp_steps: ClassVar[int] = 200

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        leaf_edges_s: Sequence[float] | None = None,
        bucket_edges_s: Sequence[float] | None = None,
        tokens: Sequence[int] = DEFAULT_TOKENS,
        d_model: int = 32,
        n_layers: int = 2,
        **kw: object,
    ) -> None:
        self.tokens = tuple(int(k) for k in tokens)
        if len(self.tokens) < 2 or min(self.tokens) < 2:
            raise ValueError(f"gr needs at least 2 steps of at least 2 tokens, not {tokens}")
        if leaf_edges_s is None or bucket_edges_s is None:
            leaf_edges_s, bucket_edges_s = gr_vocabulary(np.array([0.0, 1.0]), self.tokens)
        n_leaves = math.prod(self.tokens)
        if len(leaf_edges_s) != n_leaves + 1:
            raise ValueError(f"{len(leaf_edges_s)} leaf edges for {n_leaves} leaves")
        if len(bucket_edges_s) != self.tokens[0] * self.tokens[1] + 1:
            raise ValueError(f"{len(bucket_edges_s)} bucket edges for tokens {self.tokens}")
        super().__init__(cardinalities, numeric_width, self.n_memory * d_model, **kw)  # type: ignore[arg-type]
        self.d_model = d_model
        self.decoder = TokenDecoder(
            self.tokens, d_model, n_layers, self.n_heads, self.decoder_dropout
        )
        self.register_buffer("leaf_edges_s", torch.tensor(leaf_edges_s, dtype=torch.float32))
        self.register_buffer("bucket_edges_s", torch.tensor(bucket_edges_s, dtype=torch.float32))
        self.steps_seen = 0

    # ----- vocabulary geometry (from the leaf edges buffer) ----------------------------------

    def centres_s(self, depth: int) -> torch.Tensor:
        """Midpoints of the nodes at ``depth`` (1 = coarse slots, L = leaves), seconds."""
        edges: torch.Tensor = self.leaf_edges_s  # type: ignore[assignment]
        stride = math.prod(self.tokens[depth:])
        node_edges = edges[::stride]
        return 0.5 * (node_edges[1:] + node_edges[:-1])

    def token_values_s(self, t: int) -> torch.Tensor:
        """Value of step ``t``'s tokens after each prefix node, (prod K_<t, K_t), seconds:
        ``c(child) - c(prefix)``; the values along a sequence sum to its leaf's midpoint."""
        child = self.centres_s(t + 1).view(-1, self.tokens[t])
        if t == 0:
            return child
        return child - self.centres_s(t).unsqueeze(1)

    def tokens_of(self, y: torch.Tensor) -> torch.Tensor:
        """Token sequences of labels in scaled units, (n, L) (as :func:`encode_labels`)."""
        edges: torch.Tensor = self.leaf_edges_s  # type: ignore[assignment]
        leaf = bucket_index(edges, y.to(edges.dtype), self.label_scale)
        digits = []
        for k in reversed(self.tokens):
            digits.append(torch.remainder(leaf, k))
            leaf = torch.div(leaf, k, rounding_mode="floor")
        return torch.stack(digits[::-1], dim=1)

    # ----- decoding ---------------------------------------------------------------------------

    def memory(self, raw: torch.Tensor) -> torch.Tensor:
        """The head's output as ``M`` memory vectors, (n, M, d)."""
        return raw.reshape(-1, self.n_memory, self.d_model)

    def _true_embeddings(self, seq: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings of the true tokens of steps 1 .. L-1 (the inputs after the start)."""
        return [self.decoder.step_embeddings(t)[seq[:, t]] for t in range(len(self.tokens) - 1)]

    def mixup_share(self) -> float:
        """Share of decoder inputs taken from the model's own prediction at this point of the
        curriculum: linear from 0 to ``mixup_max`` over ``mixup_ramp_steps`` steps."""
        return self.mixup_max * min(1.0, self.steps_seen / self.mixup_ramp_steps)

    def step_logits(self, raw: torch.Tensor, seq: torch.Tensor) -> list[torch.Tensor]:
        """Each step's logits given the true prefix; in training mode with the curriculum's
        embedding mixup (a second pass whose inputs are partly the first pass's soft tokens)."""
        memory = self.memory(raw)
        true = self._true_embeddings(seq)
        logits = self.decoder.forced(memory, true)
        share = self.mixup_share() if self.training else 0.0
        if share <= 0.0:
            return logits
        mixed = []
        for t, emb in enumerate(true):
            soft = torch.softmax(logits[t], dim=1) @ self.decoder.step_embeddings(t)
            own = torch.rand(emb.shape[0], 1, device=emb.device) < share
            mixed.append(torch.where(own, soft, emb))
        return self.decoder.forced(memory, mixed)

    def soft_point(self, logits: list[torch.Tensor], seq: torch.Tensor) -> torch.Tensor:
        """Windowed soft-argmax of each step, summed, along the given prefixes, seconds."""
        node = torch.zeros_like(seq[:, 0])
        total = torch.zeros(seq.shape[0], dtype=logits[0].dtype, device=seq.device)
        for t, k in enumerate(self.tokens):
            values = self.token_values_s(t).to(logits[t].dtype)[node]
            total = total + windowed_soft_argmax(torch.softmax(logits[t], dim=1), values, self.window)
            node = node * k + seq[:, t]
        return total

    def greedy(self, raw: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Greedy decoding: each step's probabilities along the argmax path, (n, K_t), and the
        point in seconds (the windowed soft-argmax of each step, summed)."""
        n = raw.shape[0]
        state = self.decoder.begin(self.memory(raw))
        x = self.decoder.start(n)
        probs: list[torch.Tensor] = []
        node = torch.zeros(n, dtype=torch.long, device=raw.device)
        total = torch.zeros(n, dtype=raw.dtype, device=raw.device)
        for t, k in enumerate(self.tokens):
            p = torch.softmax(self.decoder.heads[t](self.decoder.step(state, x))[:, 0], dim=1)
            values = self.token_values_s(t).to(raw.dtype)[node]
            total = total + windowed_soft_argmax(p, values, self.window)
            pick = torch.argmax(p, dim=1)
            node = node * k + pick
            x = self.decoder.step_embeddings(t)[pick].unsqueeze(1)
            probs.append(p)
        return probs, total

    def bucket_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """``P(step 1 = j) P(step 2 = k | j)`` over the depth-2 buckets, (n, K_1 K_2): the
        second position runs for every coarse prefix at once (P = K_1 parallel prefixes over
        the one start position in the cache)."""
        n = raw.shape[0]
        k1, k2 = self.tokens[0], self.tokens[1]
        state = self.decoder.begin(self.memory(raw))
        h0 = self.decoder.step(state, self.decoder.start(n))  # (n, 1, d)
        p1 = torch.softmax(self.decoder.heads[0](h0), dim=2)  # (n, 1, K1)
        prefixes = self.decoder.step_embeddings(0).unsqueeze(0).expand(n, k1, self.d_model)
        h1 = self.decoder.step(state, prefixes)  # (n, K1, d)
        p2 = torch.softmax(self.decoder.heads[1](h1), dim=2)  # (n, K1, K2)
        return (p1.transpose(1, 2) * p2).reshape(-1, k1 * k2)

    # ----- BaselineModel ----------------------------------------------------------------------

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seq = self.tokens_of(y)
        logits = self.step_logits(raw, seq)
        ce = sum(F.cross_entropy(z, seq[:, t], reduction="none") for t, z in enumerate(logits))
        point = self.soft_point(logits, seq) / self.label_scale
        huber = F.huber_loss(point, y.to(point.dtype), reduction="none", delta=self.huber_delta)
        if self.training:
            self.steps_seen += 1
        return (ce + self.huber_weight * huber).mean()

    def validation_loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective as served: teacher-forced ``-log P(leaf)`` plus the Huber term of the
        greedy decode's point (no mixup, no randomness)."""
        seq = self.tokens_of(y)
        logits = self.decoder.forced(self.memory(raw), self._true_embeddings(seq))
        ce = sum(F.cross_entropy(z, seq[:, t], reduction="none") for t, z in enumerate(logits))
        point = self.restore(raw) / self.label_scale
        huber = F.huber_loss(point, y.to(point.dtype), reduction="none", delta=self.huber_delta)
        return (ce + self.huber_weight * huber).mean()

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.greedy(raw)[1])

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        edges: torch.Tensor = self.bucket_edges_s  # type: ignore[assignment]
        return self.bucket_probs(raw), per_row(edges.to(raw.dtype), raw), self.restore(raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges", "point"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "tokens_per_step": [float(k) for k in self.tokens],
            "leaf_edges_s": [float(v) for v in self.leaf_edges_s],  # type: ignore[union-attr]
            "edges_s": [float(v) for v in self.bucket_edges_s],  # type: ignore[union-attr]
            "d_model": float(self.d_model),
            "decoder_layers": float(len(self.decoder.layers)),
            "attention_heads": float(self.n_heads),
            "memory_vectors": float(self.n_memory),
            "window_half_width": float(self.window),
            "huber_weight": self.huber_weight,
            "mixup_max": self.mixup_max,
            "mixup_ramp_steps": float(self.mixup_ramp_steps),
        }
