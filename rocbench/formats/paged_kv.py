"""Paged KV cache inputs for DeepSeek-style absorbed MLA decode.

Layout (as in AITER / FlashInfer): a pool of pages `kv_buffer [num_pages, page_size, 576]`, each
cached token holding ONE latent head: 512 latent (kv_lora_rank) + 64 rope channels. Sequence b
owns the pages `kv_indices[kv_indptr[b]:kv_indptr[b+1]]`, in order, and uses
`kv_last_page_lens[b]` (1..page_size) tokens of its last page.

The inputs are built to catch indexing bugs: page ids are a random permutation (plus spare
pages that no sequence owns), and every slot that no sequence uses (the tail of each last page,
the spare pages) holds NaN, so a kernel that reads past a sequence's end produces NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rocbench.formats.fp8 import E4M3_DTYPES, fp8_max, nan_byte

KV_LORA_RANK = 512  # latent channels; V is the first KV_LORA_RANK channels of a cached token
QK_ROPE_DIM = 64
HEAD_DIM = KV_LORA_RANK + QK_ROPE_DIM  # 576 channels per cached token and per query head


SEQ_LEN_DISTS = ("uniform", "skewed", "random")


@dataclass
class PagedKV:
    """A paged latent KV cache. All index tensors are int32."""

    kv_buffer: torch.Tensor  # [num_pages, page_size, 576], bf16/fp16/fp32 or an fp8 e4m3 flavour
    kv_scale: torch.Tensor | None  # fp32 0-d per-tensor scale (fp8 only): value = fp8 * scale
    kv_indptr: torch.Tensor  # [B + 1], in pages
    kv_indices: torch.Tensor  # [kv_indptr[-1]] page ids
    kv_last_page_lens: torch.Tensor  # [B], tokens used in the last page, 1..page_size
    seq_lens: torch.Tensor  # [B], tokens per sequence
    page_size: int

    @property
    def batch(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.kv_buffer.dtype

    def to(self, device) -> "PagedKV":
        def move(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            kv_buffer=move(self.kv_buffer),
            kv_scale=move(self.kv_scale),
            kv_indptr=move(self.kv_indptr),
            kv_indices=move(self.kv_indices),
            kv_last_page_lens=move(self.kv_last_page_lens),
            seq_lens=move(self.seq_lens),
        )

    def nbytes_read(self) -> int:
        """KV bytes a decode step must read: every used token's 576 channels, once."""
        return int(self.seq_lens.sum()) * HEAD_DIM * self.kv_buffer.element_size()

    def dequantized_tokens(self, b: int) -> torch.Tensor:
        """Sequence b's cached tokens as fp32 [L, 576] (scale applied). Host syncs: not for timing."""
        start, end = int(self.kv_indptr[b]), int(self.kv_indptr[b + 1])
        pages = self.kv_indices[start:end].long()
        tokens = self.kv_buffer[pages].reshape(-1, HEAD_DIM)[: int(self.seq_lens[b])]
        tokens = tokens.float()
        if self.kv_scale is not None:
            tokens = tokens * self.kv_scale.float()
        return tokens


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _used_slots(num_pages: int, kv_indices, seq_lens, page_size) -> torch.Tensor:
    """Bool [num_pages, page_size]: True where some sequence keeps a token."""
    used = torch.zeros(num_pages, page_size, dtype=torch.bool)
    page = 0
    for length in seq_lens:
        n_pages = -(-length // page_size)
        ids = kv_indices[page : page + n_pages].long()
        used[ids] = True
        used[ids[-1], length - (n_pages - 1) * page_size :] = False
        page += n_pages
    return used


def build_paged_kv(
    seq_lens: list[int],
    page_size: int,
    kv_dtype: torch.dtype,
    generator: torch.Generator,
    device,
    value_std: float = 0.5,
) -> PagedKV:
    """Random paged cache for `seq_lens` (each >= 1) with randomly permuted page ids.

    Values are N(0, value_std^2), drawn on the generator's device and moved to `device`. For
    fp8 (float8_e4m3fn, or float8_e4m3fnuz on gfx942) the per-tensor scale is amax / the
    flavour's max (448 / 240) over the used tokens. About 1/8 extra pages
    (at least one) are owned by nobody; they and the unused tail of every last page are NaN.
    """
    if not _is_pow2(page_size):
        raise ValueError(f"page_size must be a power of two, got {page_size}")
    if not seq_lens or min(seq_lens) < 1:
        raise ValueError("every sequence needs at least one token")
    seq_lens = [int(x) for x in seq_lens]
    pages_per_seq = [-(-length // page_size) for length in seq_lens]
    num_used = sum(pages_per_seq)
    num_pages = num_used + max(1, num_used // 8)

    gen_device = generator.device
    perm = torch.randperm(num_pages, generator=generator, device=gen_device).cpu()
    kv_indices = perm[:num_used].to(torch.int32)
    kv_indptr = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
    kv_indptr[1:] = torch.cumsum(torch.tensor(pages_per_seq), 0)
    last_lens = torch.tensor(
        [length - (n - 1) * page_size for length, n in zip(seq_lens, pages_per_seq)], dtype=torch.int32
    )

    values = torch.randn(num_pages, page_size, HEAD_DIM, generator=generator, device=gen_device)
    values = values.mul_(value_std).to(device)
    unused = ~_used_slots(num_pages, kv_indices, seq_lens, page_size).to(values.device)
    kv_scale = None
    if kv_dtype in E4M3_DTYPES:
        values[unused] = 0.0  # amax over used slots only
        top = fp8_max(kv_dtype)
        scale = (values.abs().amax().clamp_min(1e-12) / top).to(torch.float32)
        kv_buffer = (values / scale).clamp_(-top, top).to(kv_dtype)
        kv_scale = scale.reshape(())
        kv_buffer.view(torch.uint8)[unused] = nan_byte(kv_dtype)
    else:
        kv_buffer = values.to(kv_dtype)
        kv_buffer[unused] = float("nan")
    del values

    return PagedKV(
        kv_buffer=kv_buffer,
        kv_scale=kv_scale,
        kv_indptr=kv_indptr.to(device),
        kv_indices=kv_indices.to(device),
        kv_last_page_lens=last_lens.to(device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        page_size=page_size,
    )


def make_seq_lens(batch: int, ctx: int, dist: str, generator: torch.Generator) -> list[int]:
    """Context lengths for a batch; the total is ~batch * ctx for every distribution.

    - 'uniform': every sequence has exactly `ctx` tokens.
    - 'skewed': max(1, round(batch / 16)) long sequences at random positions; the others have
      ctx // 4 tokens and the long ones share the rest of batch * ctx evenly (batch 64, ctx 4096:
      4 sequences of 50176 and 60 of 1024). A split-per-sequence kernel load-imbalances here.
    - 'random': uniform random integers in [ctx // 2, ctx].
    """
    if batch < 1 or ctx < 1:
        raise ValueError("batch and ctx must be >= 1")
    if dist == "uniform":
        return [ctx] * batch
    if dist == "random":
        low = max(1, ctx // 2)
        return torch.randint(low, ctx + 1, (batch,), generator=generator, device=generator.device).tolist()
    if dist == "skewed":
        n_long = min(batch, max(1, round(batch / 16)))
        short = max(1, ctx // 4)
        long = max(ctx, (batch * ctx - (batch - n_long) * short) // n_long)
        lens = [short] * batch
        for i in torch.randperm(batch, generator=generator, device=generator.device)[:n_long].tolist():
            lens[i] = long
        return lens
    raise ValueError(f"unknown seq-len distribution {dist!r}; expected one of {SEQ_LEN_DISTS}")


def make_query(tokens: int, nhead: int, dtype: torch.dtype, generator: torch.Generator, device) -> torch.Tensor:
    """q [tokens, nhead, 576] ~ N(0, 1), drawn on the generator's device."""
    q = torch.randn(tokens, nhead, HEAD_DIM, generator=generator, device=generator.device)
    return q.to(device=device, dtype=dtype)
