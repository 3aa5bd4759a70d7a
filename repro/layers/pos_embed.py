"""2-D position encodings for attention over feature-map tokens (reference_spec §2.1 step 2 and §2.10).

* :class:`LearnedPositionEmbedding`: the DETR-style learned table used by every official self-attentive pool.
* :class:`SinePositionEmbedding`: the DETR sine encoding (normalised, scale 2π) without a padding mask. The official
  ``sine`` option asserts that a mask exists but is never given one, so it always crashes (B17); this version treats
  every position as valid, which is what the crash was standing in the way of. It has no table, so no size limit.

Both return a ``(1, 2·⌊dim/2⌋, H, W)`` map that broadcasts over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LearnedPositionEmbedding", "SinePositionEmbedding", "build_position_embedding"]


class LearnedPositionEmbedding(nn.Module):
    """Absolute learned 2-D position embedding (DETR): ``pos[:, i, j] = concat(col_embed[j], row_embed[i])``.

    The column embedding fills the first ``dim // 2`` channels and the row embedding the next ``dim // 2``.
    Both tables are ``nn.Embedding(max_positions, dim // 2)`` initialised U(0, 1), as in the official code, so a
    token grid may have at most ``max_positions`` rows and columns (B11).
    """

    def __init__(self, dim: int, max_positions: int = 256) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"position embedding needs dim >= 2 (half for rows, half for columns), got dim={dim}")
        self.dim = dim
        self.max_positions = max_positions
        self.row_embed = nn.Embedding(max_positions, dim // 2)
        self.col_embed = nn.Embedding(max_positions, dim // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position map ``(1, 2·(dim // 2), H, W)`` for a feature map ``x`` of shape ``(..., H, W)``."""
        height, width = x.shape[-2:]
        if height > self.max_positions or width > self.max_positions:
            raise ValueError(
                f"token grid {height}x{width} exceeds the learned position table, which holds at most "
                f"{self.max_positions} positions per axis; use a larger patch_size (tokens per axis = "
                f"size // patch_size), a smaller input, or position_embedding='sine'"
            )
        device = self.col_embed.weight.device
        cols = self.col_embed(torch.arange(width, device=device))  # (W, D)
        rows = self.row_embed(torch.arange(height, device=device))  # (H, D)
        pos = torch.cat([cols.unsqueeze(0).expand(height, -1, -1), rows.unsqueeze(1).expand(-1, width, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_positions={self.max_positions}"


class SinePositionEmbedding(nn.Module):
    """DETR sine encoding with ``normalize=True``: rows first, then columns, ``dim // 2`` channels each.

    Channel ``c`` of each half is ``sin`` (even ``c``) or ``cos`` (odd ``c``) of ``scale · pos / (size + eps) /
    temperature^(2·(c // 2) / (dim // 2))`` with ``pos`` counted from 1. No parameters and no size limit.
    """

    def __init__(self, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"position embedding needs dim >= 2 (half for rows, half for columns), got dim={dim}")
        self.dim = dim
        self.temperature = temperature
        self.scale = scale

    def _encode(self, size: int, device: torch.device) -> torch.Tensor:
        feats = self.dim // 2
        pos = torch.arange(1, size + 1, dtype=torch.float32, device=device)
        pos = pos / (size + 1e-6) * self.scale
        index = torch.arange(feats, dtype=torch.float32, device=device)
        angle = pos[:, None] / self.temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / feats)
        even = (torch.arange(feats, device=device) % 2 == 0)[None, :]
        return torch.where(even, angle.sin(), angle.cos())  # (size, feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position map ``(1, 2·(dim // 2), H, W)`` for a feature map ``x`` of shape ``(..., H, W)``."""
        height, width = x.shape[-2:]
        rows = self._encode(height, x.device)
        cols = self._encode(width, x.device)
        pos = torch.cat([rows.unsqueeze(1).expand(-1, width, -1), cols.unsqueeze(0).expand(height, -1, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}, scale={self.scale:.4f}"


POSITION_EMBEDDINGS = ("learned", "sine")


def build_position_embedding(kind: str | None, dim: int) -> nn.Module | None:
    """``'learned'`` → :class:`LearnedPositionEmbedding`, ``'sine'`` → :class:`SinePositionEmbedding`, None → None."""
    if kind is None or kind == "none":
        return None
    if kind == "learned":
        return LearnedPositionEmbedding(dim)
    if kind == "sine":
        return SinePositionEmbedding(dim)
    raise ValueError(f"unknown position_embedding {kind!r}; valid choices: 'learned', 'sine', None")
