"""AITER's two MXFP4 MoE weight layouts ("interleave" and "separated"), their inverses, and the
index math a kernel needs to read them in place.

Re-derived from the public ROCm/aiter ``aiter/ops/shuffle.py`` (facts only):

INTERLEAVE = ``shuffle_weight_a16w4(w, 16, gate_up)`` + ``shuffle_scale_a16w4(s, E, gate_up)``
SEPARATED  = ``shuffle_weight(w, is_guinterleave=False, gate_up=...)`` +
             ``shuffle_scale(s, experts_cnt=E, is_guinterleave=False, gate_up=...)``

Weights ([E, N, K/2] packed fp4 bytes; for w13 N = 2*inter with the gate rows first):
  Both layouts cut each expert into 16-row *strips*. Inside a strip the 16 rows x K/2 bytes are
  stored as K/32 chunks of [16 rows][16 bytes] (16 bytes = 32 fp4 values = one MX block of one
  row), so byte kb of strip row r sits at (kb // 16) * 256 + r * 16 + kb % 16.
  The layouts differ only in the order of the strips:
    * separated: strips in natural row order (gate strips, then up strips);
    * interleave with gate_up: gate strip j is followed by up strip j (g0 u0 g1 u1 ...);
    * interleave without gate_up (w2): natural order, byte-identical to separated.
  AITER's tile constraints: separated asserts N % 16 == 0 and (K/2) % 32 == 0; interleave views
  the tensor as 16-row x 64-byte tiles, so it needs (N or N/2) % 16 == 0 and (K/2) % 64 == 0.

Scales (E8M0 bytes, given as [E*N, K/32]; AITER returns a 2-D tensor):
  Both layouts group scales in 32-row x 8-column tiles of 256 bytes, tiles row-major over
  (row tile, column tile). Inside a tile, byte (row = np*16 + nl, col = kp*4 + kl) is stored at
  kl*64 + nl*4 + kp*2 + np.
    * separated: rows are the flattened E*N rows (a tile may straddle two experts); the whole
      [E*N, K/32] matrix is padded to rows % 256 == 0 and cols % 8 == 0. AITER ignores
      experts_cnt and gate_up here. Padding bytes: AITER's current code leaves them
      uninitialised (torch.empty), older code filled 0x7F; we fill 0x7F (scale 1.0).
    * interleave: tiles are per expert; columns are padded to a multiple of 8 with 0x7F. With
      gate_up the "np" bit of a tile selects gate vs up: the tile holds gate rows
      n1*16..n1*16+15 and the matching up rows (so N/2 % 16 == 0 is needed); without gate_up
      the tile holds 32 consecutive rows (N % 32 == 0 is needed).
"""

from __future__ import annotations

import torch

from rocbench.formats.mxfp4 import MX_BLOCK

INTERLEAVE = "interleave"
SEPARATED = "separated"
LAYOUTS = (INTERLEAVE, SEPARATED)

STRIP_ROWS = 16  # rows per weight strip
CHUNK_BYTES = 16  # bytes per row per chunk (= one MX block)
SCALE_TILE_ROWS = 32
SCALE_TILE_COLS = 8
SEPARATED_SCALE_ROW_PAD = 256
NEUTRAL_SCALE = 0x7F  # E8M0 2^0

# AITER's K granularity (packed bytes) per layout.
_WEIGHT_KBYTES_MULTIPLE = {SEPARATED: 32, INTERLEAVE: 64}


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


# --------------------------------------------------------------------------------------------
# Support check
# --------------------------------------------------------------------------------------------

def layout_unsupported_reason(layout: str, experts: int, n: int, k: int, gate_up: bool) -> str | None:
    """Why a weight [experts, n, k] (k = unpacked K) cannot take ``layout``; None if it can.

    Mirrors the tile constraints of AITER's shuffles; weights are never padded to fit.
    """
    if layout not in LAYOUTS:
        return f"unknown layout {layout!r}"
    if experts < 1 or n < 1 or k < 1:
        return f"empty weight (experts={experts}, n={n}, k={k})"
    if k % MX_BLOCK:
        return f"K={k} is not a multiple of the MX block {MX_BLOCK} (cannot be MXFP4)"
    if gate_up and n % 2:
        return f"gate_up weight needs an even N (gate and up halves), got N={n}"
    kbytes = k // 2
    kmul = _WEIGHT_KBYTES_MULTIPLE[layout]
    if layout == SEPARATED:
        if n % STRIP_ROWS:
            return f"separated: N={n} is not a multiple of the 16-row tile"
        if kbytes % kmul:
            return (f"separated: K={k} ({kbytes} packed bytes) is not a multiple of the 16x32-byte"
                    f" tile's 64 values")
        return None
    rows = n // 2 if gate_up else n
    what = "gate/up half N/2" if gate_up else "N"
    if rows % STRIP_ROWS:
        return f"interleave: {what}={rows} is not a multiple of the 16-row tile"
    if kbytes % kmul:
        return (f"interleave: K={k} ({kbytes} packed bytes) is not a multiple of the 16x64-byte"
                f" tile's 128 values")
    if not gate_up and n % SCALE_TILE_ROWS:
        return f"interleave: N={n} is not a multiple of the 32-row scale tile"
    return None


def scale_unsupported_reason(layout: str, experts: int, n: int, gate_up: bool) -> str | None:
    """Constraints of the scale shuffle alone (AITER's scale shuffles pad K/32, and separated
    also pads rows, so only interleave's per-expert 32-row tiles constrain N)."""
    if layout not in LAYOUTS:
        return f"unknown layout {layout!r}"
    if layout == INTERLEAVE and n % SCALE_TILE_ROWS:
        what = "gate/up half N/2" if gate_up else "N"
        rows = n // 2 if gate_up else n
        return f"interleave: {what}={rows} does not fill the scale tile (needs N % 32 == 0)"
    return None


def require_layout(layout: str, experts: int, n: int, k: int, gate_up: bool) -> None:
    reason = layout_unsupported_reason(layout, experts, n, k, gate_up)
    if reason is not None:
        raise ValueError(f"shape [E={experts}, N={n}, K={k}] gate_up={gate_up}: {reason}")


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def _weight_dims(t: torch.Tensor, experts: int) -> tuple[int, int, int]:
    if t.dim() != 3 or t.shape[0] != experts:
        raise ValueError(f"expected packed weight [E={experts}, N, K/2], got {tuple(t.shape)}")
    return t.shape[0], t.shape[1], t.shape[2]


def _strip_order_to_interleaved(t: torch.Tensor) -> torch.Tensor:
    """[E, N, KB] -> rows reordered so gate strip j is followed by up strip j."""
    e, n, kb = t.shape
    strips = n // 2 // STRIP_ROWS
    return t.reshape(e, 2, strips, STRIP_ROWS, kb).transpose(1, 2).reshape(e, n, kb)


def _strip_order_from_interleaved(t: torch.Tensor) -> torch.Tensor:
    e, n, kb = t.shape
    strips = n // 2 // STRIP_ROWS
    return t.reshape(e, strips, 2, STRIP_ROWS, kb).transpose(1, 2).reshape(e, n, kb)


def _chunk_major(t: torch.Tensor) -> torch.Tensor:
    """Inside each 16-row strip: [16 rows][K/32 chunks][16 B] -> [K/32 chunks][16 rows][16 B]."""
    e, n, kb = t.shape
    v = t.reshape(e, n // STRIP_ROWS, STRIP_ROWS, kb // CHUNK_BYTES, CHUNK_BYTES)
    return v.transpose(2, 3).reshape(e, n, kb)


def _row_major(t: torch.Tensor) -> torch.Tensor:
    e, n, kb = t.shape
    v = t.reshape(e, n // STRIP_ROWS, kb // CHUNK_BYTES, STRIP_ROWS, CHUNK_BYTES)
    return v.transpose(2, 3).reshape(e, n, kb)


def shuffle_weight(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """Packed fp4 [E, N, K/2] (uint8) -> AITER ``layout`` bytes, same shape."""
    _check_layout(layout)
    e, n, kb = _weight_dims(t, experts)
    require_layout(layout, e, n, kb * 2, gate_up)
    t = t.view(torch.uint8).contiguous()
    if layout == INTERLEAVE and gate_up:
        t = _strip_order_to_interleaved(t)
    return _chunk_major(t).contiguous()


def unshuffle_weight(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """Inverse of shuffle_weight."""
    _check_layout(layout)
    e, n, kb = _weight_dims(t, experts)
    require_layout(layout, e, n, kb * 2, gate_up)
    t = _row_major(t.view(torch.uint8).contiguous())
    if layout == INTERLEAVE and gate_up:
        t = _strip_order_from_interleaved(t)
    return t.contiguous()


def weight_strip(layout: str, gate_up: bool, n_rows: int, row):
    """Logical row (gate rows first, then up rows) -> (strip index, row inside the strip).

    Works on ints and on integer tensors (torch or Triton: only // % * + are used).
    """
    if layout == INTERLEAVE and gate_up:
        half = n_rows // 2
        is_up = row // half  # 0 for gate rows, 1 for up rows
        r = row - is_up * half
        return (r // STRIP_ROWS) * 2 + is_up, r % STRIP_ROWS
    return row // STRIP_ROWS, row % STRIP_ROWS


def weight_offset(layout: str, gate_up: bool, n_rows: int, k_bytes: int, expert, row, kb):
    """Flat byte offset, in the shuffled [E, N, K/2] tensor, of logical byte (expert, row, kb)."""
    strip, r = weight_strip(layout, gate_up, n_rows, row)
    return (expert * n_rows * k_bytes + strip * STRIP_ROWS * k_bytes
            + (kb // CHUNK_BYTES) * (STRIP_ROWS * CHUNK_BYTES) + r * CHUNK_BYTES + kb % CHUNK_BYTES)


# --------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------

def shuffled_scale_shape(layout: str, experts: int, n: int, k_blocks: int) -> tuple[int, int]:
    """2-D shape AITER returns for a [E*N, K/32] scale (padding included)."""
    _check_layout(layout)
    cols = _round_up(k_blocks, SCALE_TILE_COLS)
    if layout == SEPARATED:
        return _round_up(experts * n, SEPARATED_SCALE_ROW_PAD), cols
    return experts * n, cols


def _scale_2d(t: torch.Tensor, experts: int) -> torch.Tensor:
    t = t.view(torch.uint8)
    if t.dim() == 3:
        if t.shape[0] != experts:
            raise ValueError(f"scale has {t.shape[0]} experts, expected {experts}")
        return t.reshape(-1, t.shape[-1])
    if t.dim() != 2 or t.shape[0] % experts:
        raise ValueError(f"expected scale [E*N, K/32] or [E, N, K/32], got {tuple(t.shape)}")
    return t


def _tile_scale(padded: torch.Tensor) -> torch.Tensor:
    """[R, C] (R % 32 == 0, C % 8 == 0) -> 32x8 tiles, inner order [kl][nl][kp][np]."""
    r, c = padded.shape
    v = padded.reshape(r // 32, 2, 16, c // 8, 2, 4)  # (rt, np, nl, ct, kp, kl)
    return v.permute(0, 3, 5, 2, 4, 1).reshape(r, c)


def _untile_scale(tiled: torch.Tensor) -> torch.Tensor:
    r, c = tiled.shape
    v = tiled.reshape(r // 32, c // 8, 4, 16, 2, 2)  # (rt, ct, kl, nl, kp, np)
    return v.permute(0, 5, 3, 1, 4, 2).reshape(r, c)


def _gate_up_rows_to_tiles(s: torch.Tensor, experts: int) -> torch.Tensor:
    """Per expert [g rows, u rows] -> rows ordered so each 32-row tile is (16 gate, 16 up)."""
    rows, c = s.shape
    n = rows // experts
    strips = n // 2 // 16
    return s.reshape(experts, 2, strips, 16, c).transpose(1, 2).reshape(rows, c)


def _gate_up_rows_from_tiles(s: torch.Tensor, experts: int) -> torch.Tensor:
    rows, c = s.shape
    n = rows // experts
    strips = n // 2 // 16
    return s.reshape(experts, strips, 2, 16, c).transpose(1, 2).reshape(rows, c)


def shuffle_scale(t: torch.Tensor, layout: str, gate_up: bool, experts: int) -> torch.Tensor:
    """E8M0 scale [E*N, K/32] (or [E, N, K/32]) -> AITER ``layout`` bytes, 2-D, padded."""
    _check_layout(layout)
    s = _scale_2d(t, experts).contiguous()
    rows, kblk = s.shape
    n = rows // experts
    reason = scale_unsupported_reason(layout, experts, n, gate_up)
    if reason is not None:
        raise ValueError(f"scale [E={experts}, N={n}, K/32={kblk}] gate_up={gate_up}: {reason}")
    out_rows, out_cols = shuffled_scale_shape(layout, experts, n, kblk)
    padded = torch.full((out_rows, out_cols), NEUTRAL_SCALE, dtype=torch.uint8, device=s.device)
    if layout == INTERLEAVE and gate_up:
        s = _gate_up_rows_to_tiles(s, experts)
    padded[:rows, :kblk] = s
    return _tile_scale(padded).contiguous()


def unshuffle_scale(t: torch.Tensor, layout: str, gate_up: bool, experts: int, shape) -> torch.Tensor:
    """Inverse of shuffle_scale; ``shape`` is the original ([E*N, K/32] or [E, N, K/32])."""
    _check_layout(layout)
    shape = tuple(shape)
    rows = shape[0] * shape[1] if len(shape) == 3 else shape[0]
    kblk = shape[-1]
    n = rows // experts
    if tuple(t.shape) != shuffled_scale_shape(layout, experts, n, kblk):
        raise ValueError(f"shuffled scale shape {tuple(t.shape)} does not match original {shape}")
    s = _untile_scale(t.view(torch.uint8).contiguous())[:rows, :kblk]
    if layout == INTERLEAVE and gate_up:
        s = _gate_up_rows_from_tiles(s.contiguous(), experts)
    return s.contiguous().reshape(shape)


def scale_row_offset(layout: str, gate_up: bool, n_rows: int, k_blocks: int, expert, row):
    """Row part of a scale's offset: offset = scale_row_offset(...) + scale_col_offset(col)."""
    cols = _round_up(k_blocks, SCALE_TILE_COLS)
    if layout == INTERLEAVE and gate_up:
        half = n_rows // 2
        is_up = row // half  # the tile's "n pack" bit is gate (0) / up (1)
        r = row - is_up * half
        return (expert * (n_rows // 32) + r // 16) * 32 * cols + (r % 16) * 4 + is_up
    # Separated tiles the flattened E*N rows (a tile may straddle experts); interleave without
    # gate_up has N % 32 == 0, so the same formula keeps its tiles inside an expert.
    g = expert * n_rows + row
    return (g // 32) * 32 * cols + (g % 16) * 4 + (g % 32) // 16


def scale_col_offset(col):
    """Column part of a scale's offset (identical for both layouts): col = kp * 4 + kl."""
    return (col // 8) * 256 + (col % 4) * 64 + ((col % 8) // 4) * 2


def scale_offset(layout: str, gate_up: bool, n_rows: int, k_blocks: int, expert, row, col):
    """Flat offset, in the shuffled 2-D scale, of logical scale (expert, row, block col).

    Works on ints and integer tensors (torch or Triton).
    """
    return (scale_row_offset(layout, gate_up, n_rows, k_blocks, expert, row)
            + scale_col_offset(col))


# --------------------------------------------------------------------------------------------
# Gate/up row helpers (HF gpt-oss stores gate/up interleaved by row)
# --------------------------------------------------------------------------------------------

def deinterleave_gate_up(t: torch.Tensor) -> torch.Tensor:
    """[E, 2I, ...] rows [g0, u0, g1, u1, ...] -> [g0..g_{I-1}, u0..u_{I-1}] (what SGLang does
    before shuffling for AITER). Works for weights, scales ([E, 2I, K/32]) and biases ([E, 2I])."""
    e, n = t.shape[0], t.shape[1]
    rest = t.shape[2:]
    return t.reshape(e, n // 2, 2, *rest).transpose(1, 2).reshape(e, n, *rest).contiguous()
