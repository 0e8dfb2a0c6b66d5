"""Where in the image are the objects the instruction names? A pixel-level, language-conditioned
localiser: the VLA's object-centric front end (off by default; ``VLAConfig.localiser_points``).

Why it exists: trained end to end from 50 demos per task, every pathway from image features to the
action memorised the training layouts (docs/policy.md, sessions 3-8), while an action head fed the
*true* image position of the named object generalised to held-out layouts. This module supplies that
position, and generalises by construction:
- it sees only local appearance: two 3x3 convolutions at full resolution (a 5-pixel receptive
  field), with no position input, so it is translation-equivariant and cannot tell one layout from
  another, only "what does the named thing look like here";
- which thing to find comes from the instruction: a one-layer transformer over the instruction's
  words (sin-cos positions, so word order counts: "the red block on the blue block") and one learned
  query per point attends over it; the result FiLM-modulates the feature map, and a 1x1 convolution
  scores every pixel;
- each point is the expectation of the softmax over pixels (a spatial soft-argmax); it is trained
  with its own loss (``localisation_loss``, cross-entropy against a small Gaussian around the
  labelled pixel), from labels the simulator records (``obs/agentview_named_pixels``).

Shapes: pixels ``uint8 [B, H, W, 3]``, logits ``[B, K, H*W]``, points ``[B, K, 2]`` as (column, row)
in pixels, pixel i spanning [i, i + 1).
"""

from __future__ import annotations

import torch
from torch import nn

LABEL_SIGMA_PIXELS = 1.0  # width of the Gaussian target around a labelled pixel


def sincos_codes(values: torch.Tensor, width: int) -> torch.Tensor:
    """``[N]`` positions -> ``[N, width]`` fixed codes: sines then cosines at ``width / 2`` geometric
    frequencies from 1 down to 1/10000 (the transformer's; also the halves of ``model.sincos_2d``)."""
    frequencies = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float32, device=values.device) / (width // 2))
    angles = values.reshape(-1, 1).float() * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ObjectLocaliser(nn.Module):
    """``points`` language-conditioned maps over the pixels of one camera."""

    def __init__(self, points: int, channels: int, vocab_size: int | None, text_width: int = 64):
        """``vocab_size=None``: the instruction arrives already encoded, as token states ``[B, L,
        text_width]`` with their own positions (the critic's frozen sentence encoder), not as ids."""
        super().__init__()
        self.points = points
        self.word_embedding = nn.Embedding(vocab_size, text_width) if vocab_size is not None else None
        self.text_encoder = nn.TransformerEncoderLayer(text_width, 4, 4 * text_width, dropout=0.0, batch_first=True)
        self.point_queries = nn.Parameter(torch.randn(points, text_width) * 0.02)
        self.query_attention = nn.MultiheadAttention(text_width, 4, batch_first=True)
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
                                      nn.Conv2d(channels, channels, 3, padding=1), nn.GELU())
        self.film = nn.Linear(text_width, 2 * channels)
        self.score = nn.Conv2d(channels, 1, 1)

    def point_conditions(self, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids (or ``[B, L, text_width]`` token states, see ``__init__``) and mask
        (1 = real) of the instructions -> ``[B, K, text_width]``."""
        padding = word_mask == 0
        words = word_ids
        if self.word_embedding is not None:
            positions = torch.arange(word_ids.shape[1], device=word_ids.device)
            words = self.word_embedding(word_ids) + sincos_codes(positions, self.word_embedding.embedding_dim)
        encoded = self.text_encoder(words, src_key_padding_mask=padding)
        queries = self.point_queries.expand(len(word_ids), -1, -1)
        conditions, _ = self.query_attention(queries, encoded, encoded, key_padding_mask=padding, need_weights=False)
        return conditions

    def forward(self, pixels: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, H, W, 3]`` images -> ``[B, K, H*W]`` logits of where each named point is."""
        x = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        features = self.features(x)  # [B, C, H, W]
        scale, shift = self.film(self.point_conditions(word_ids, word_mask)).chunk(2, dim=-1)  # [B, K, C] each
        modulated = features.unsqueeze(1) * (1 + scale[..., None, None]) + shift[..., None, None]
        batch, points, channels, height, width = modulated.shape
        logits = self.score(nn.functional.gelu(modulated).reshape(batch * points, channels, height, width))
        return logits.reshape(batch, points, height * width)


def expected_pixels(logits: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, K, size*size]`` logits -> ``[B, K, 2]`` expected (column, row) under their softmax."""
    probabilities = torch.softmax(logits, dim=-1).reshape(*logits.shape[:-1], size, size)
    centres = torch.arange(size, device=logits.device, dtype=probabilities.dtype) + 0.5
    columns = (probabilities.sum(-2) * centres).sum(-1)
    rows = (probabilities.sum(-1) * centres).sum(-1)
    return torch.stack([columns, rows], dim=-1)


def localisation_loss(logits: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``[B, K, size*size]`` logits against a Gaussian (``LABEL_SIGMA_PIXELS``) around
    the ``[B, K, 2]`` labelled (column, row); labels outside the image are ignored. Returns the loss
    and the median pixel error of ``expected_pixels`` over the labels inside the image (a readout)."""
    centres = torch.arange(size, device=logits.device, dtype=torch.float32) + 0.5
    along_columns = torch.exp(-(centres - labels[..., :1]) ** 2 / (2 * LABEL_SIGMA_PIXELS ** 2))  # [B, K, W]
    along_rows = torch.exp(-(centres - labels[..., 1:]) ** 2 / (2 * LABEL_SIGMA_PIXELS ** 2))  # [B, K, H]
    target = (along_rows[..., :, None] * along_columns[..., None, :]).flatten(-2)
    target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    inside = ((labels >= 0) & (labels < size)).all(-1).float()  # [B, K]
    per_point = -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
    loss = (per_point * inside).sum() / inside.sum().clamp(min=1.0)
    with torch.no_grad():
        errors = (expected_pixels(logits.float(), size) - labels).norm(dim=-1)[inside.bool()]
        median_error = errors.median() if errors.numel() else torch.tensor(float("nan"))
    return loss, median_error
