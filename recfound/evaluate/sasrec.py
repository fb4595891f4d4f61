"""SASRec (Kang & McAuley, ICDM 2018), ID-based, trained with full-softmax cross-entropy.

A causal self-attention encoder over a user's last `max_len` item ids (learned item and
position embeddings, pre-norm blocks); the hidden state h_t at position t scores every item j
of the catalogue by h_t · e_j with the input embeddings e (tied, as in the paper). Training
predicts, at every position of every training window, the next item with the cross-entropy
over the whole catalogue,

    L = − Σ_t log softmax_j(h_t · e_j)[i_{t+1}],

rather than the paper's one sampled negative with binary cross-entropy: full softmax is the
stronger setting (RecSys '23 reproducibility study: SASRec on MovieLens-1M NDCG@10 .13 with
binary CE, .18 with full-softmax CE). Cornac 3.0.1's SASRec scores in-batch targets plus
sampled negatives and cannot be set to the whole catalogue, hence this module.

Training windows: each training sequence is cut, from its end, into windows of at most
`max_len` + 1 items (inputs the first `max_len`, targets shifted by one), so every training
interaction is a target once per epoch whatever the history's length. Padding (id 0) is on
the left; a position attends to itself and to the earlier non-padding ones (never to nothing,
which would give NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from recfound.config import SASRecConfig

PAD = 0  # item index 0 pads; catalogue item j is index j + 1
# Users scored per forward pass at prediction time (bounds the users x items score block).
PREDICT_BATCH = 256


class SASRecNet(nn.Module):
    """The encoder: item + position embeddings, `layers` pre-norm causal attention blocks."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=PAD)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        block = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.heads,
            dim_feedforward=cfg.dim,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.items.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item indices -> (B, L, dim) hidden states."""
        length = seqs.shape[1]
        x = self.items(seqs) * math.sqrt(self.cfg.dim)
        x = self.dropout(x + self.positions(torch.arange(length, device=seqs.device)))
        future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        blocked = future | (seqs == PAD)[:, None, :]
        blocked &= ~torch.eye(length, dtype=torch.bool)
        mask = torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.cfg.heads, dim=0)
        return self.norm(self.encoder(x, mask=mask))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item (padding left out): (..., dim) -> (..., n_items)."""
        return hidden @ self.items.weight[1:].T


def _left_padded(seqs: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), PAD, dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            out[row, length - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
    return out


def training_windows(train: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
    """Each sequence (catalogue indices, 0-based) cut from its end into windows of at most
    `max_len` + 1 items, consecutive windows sharing one item, so every item but a sequence's
    first is a target exactly once; windows shorter than 2 items have no target."""
    windows = []
    for seq in train:
        shifted = [item + 1 for item in seq]
        end = len(shifted)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(shifted[start:end])
            end = start + 1
    return windows


class SASRec:
    """Fit on training sequences of catalogue indices; score every item for histories."""

    name = "sasrec"

    def __init__(self, cfg: SASRecConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.net: SASRecNet | None = None

    def fit(self, train: Sequence[Sequence[int]], n_items: int) -> list[float]:
        """Train for `cfg.epochs`; returns the mean loss of each epoch. Seeded, and the global
        torch generator is left as it was."""
        cfg = self.cfg
        windows = training_windows(train, cfg.max_len)
        losses = []
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            order_rng = np.random.default_rng(self.seed)
            self.net = net = SASRecNet(n_items, cfg)
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98))
            net.train()
            for _ in range(cfg.epochs if windows else 0):
                total, count = 0.0, 0
                order = order_rng.permutation(len(windows))
                for start in range(0, len(windows), cfg.batch_size):
                    picked = order[start : start + cfg.batch_size]
                    batch = _left_padded([windows[i] for i in picked], cfg.max_len + 1)
                    inputs, targets = batch[:, :-1], batch[:, 1:]
                    keep = targets != PAD
                    hidden = net(inputs)[keep]
                    loss = nn.functional.cross_entropy(net.logits(hidden), targets[keep] - 1)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * int(keep.sum())
                    count += int(keep.sum())
                losses.append(total / max(count, 1))
        net.eval()
        return losses

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(users, n_items): every item's score after each history (its last `max_len`)."""
        if self.net is None:
            raise RuntimeError("SASRec.scores before fit")
        out = []
        for start in range(0, len(histories), PREDICT_BATCH):
            part = [
                [i + 1 for i in h[-self.cfg.max_len :]]
                for h in histories[start : start + PREDICT_BATCH]
            ]
            hidden = self.net(_left_padded(part, self.cfg.max_len))[:, -1]
            out.append(self.net.logits(hidden).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.net.items.num_embeddings - 1))
