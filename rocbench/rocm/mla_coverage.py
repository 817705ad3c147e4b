"""Which AITER asm kernel an MLA decode call reaches, decided from AITER's own kernel table.

AITER keeps one table of MLA asm kernels per arch, hsa/<arch>/mla/mla_asm.csv (qType, kvType,
Gqa, ps, qSeqLen, prefill, causal, lse[, cprr], knl_name, co_name). A call whose selector has no
row aborts at run time with "cannot get heuristic kernel". The selector comes from two steps that
are transcribed here from AITER e4048607a5 (experimental paths off, AITER_ENABLE_EXPERIMENTAL
unset; no LSE requested; no context parallelism):

1. aiter/mla.py:761-842 (persistent calls only): the head counts the persistent kernels take
   natively; any other head count in 32..128 (step 16) is folded onto the 16-head kernel (q is
   viewed as fold x more rows of 16 heads); anything else is refused by an assert.
2. csrc/py_itfs_cu/asm_mla.cu:854-1001: per (gqa = heads, q/kv type, persistent, q length) the
   table key's Gqa and qSeqLen (padded q lengths, arch-specific remaps, checks that abort).

The table itself is read from the installed AITER at run time, never from a copy.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

FOLDABLE_HEADS = range(32, 128 + 1, 16)


@dataclass(frozen=True)
class MlaRequest:
    arch: str  # gfx942 | gfx950
    q_type: str  # "bf16" | "fp8"
    kv_type: str  # "bf16" | "fp8"
    nhead: int
    qlen: int
    persistent: bool


@dataclass(frozen=True)
class KernelKey:
    """The columns get_heuristic_kernel_mla matches (prefill 0 and cprr 0 for decode)."""

    q_type: str
    kv_type: str
    gqa: int
    ps: int
    qseqlen: int
    causal: int = 1
    lse: int = 0

    def describe(self) -> str:
        return (f"qType={self.q_type} kvType={self.kv_type} Gqa={self.gqa} ps={self.ps} qSeqLen={self.qseqlen} "
                f"causal={self.causal} lse={self.lse}")


@dataclass(frozen=True)
class Coverage:
    kernel: str | None  # knl_name of the matching row; None when unsupported
    key: KernelKey | None
    fold: int  # mla.py's head fold factor (1: the kernel sees the real head count)
    reason: str | None  # why no kernel runs

    @property
    def supported(self) -> bool:
        return self.kernel is not None


def _native_persistent(r: MlaRequest) -> bool:
    """aiter/mla.py:761-818: head counts the persistent path passes through unfolded."""
    fp8 = r.q_type == "fp8" and r.kv_type == "fp8"
    bf16 = r.q_type == "bf16" and r.kv_type == "bf16"
    return (r.nhead == 16
            or (r.arch == "gfx942" and r.nhead == 128 and fp8)
            or (r.arch == "gfx950" and fp8 and r.nhead in (32, 64, 128))
            or (r.arch == "gfx950" and r.nhead == 8 and fp8 and r.qlen == 4)
            or (r.arch == "gfx942" and r.nhead == 8 and bf16 and r.qlen == 2)
            or (r.arch == "gfx942" and r.nhead == 64 and fp8 and r.qlen == 1)
            or (r.arch == "gfx950" and bf16))


def _cpp_key(r: MlaRequest, gqa: int) -> KernelKey | str:
    """asm_mla.cu:854-1001: the table key, or the message of the AITER_CHECK that aborts."""
    ps, qseq, key_gqa = int(r.persistent), r.qlen, gqa
    q, kv, gfx950 = r.q_type, r.kv_type, r.arch == "gfx950"
    bf16, fp8 = (q, kv) == ("bf16", "bf16"), (q, kv) == ("fp8", "fp8")
    if gqa == 128:
        qseq = 0
        if bf16 and r.arch == "gfx942":
            ps = 0  # gfx942 has no persistent a16w16 128-head kernel: the call runs non-persistent
    elif gqa == 16:
        if bf16:
            if r.persistent:
                qseq = 4 if r.qlen <= 4 else r.qlen
            else:
                qseq = 1 if r.qlen == 1 else (4 if r.qlen <= 4 else 8)
        elif q == "bf16" and kv in ("fp8", "byte"):
            if r.persistent and r.qlen <= 4:
                qseq = 4
        elif q == "fp8":
            if r.qlen in (1, 2):
                qseq = r.qlen
            elif r.qlen <= 4:
                qseq = 4
            elif r.persistent and gfx950:
                qseq, key_gqa = 4, 32
            else:
                return "gqa_ratio=16 fp8 decoding needs qo_len <= 4 (or > 4 persistent on gfx950)"
    elif gqa == 32:
        if bf16 and not r.persistent:
            qseq = 0
        elif fp8:
            if r.qlen == 1:
                qseq = 1
            elif r.qlen >= 3 and r.persistent and gfx950:
                qseq = 4
            elif r.qlen == 2 and r.persistent:
                qseq = 2
            else:
                return "fp8/fp8 with gqa_ratio=32 only supports decode_qlen=1,2 persistent (>= 3 persistent on gfx950)"
    elif gqa == 64:
        if bf16 and not r.persistent:
            qseq = 1 if r.qlen == 1 else 0
        elif fp8:
            if not r.persistent:
                return "fp8/fp8 with gqa_ratio=64 only supports persistent mode"
            qseq = 1 if r.qlen == 1 else 4
    if gfx950 and r.persistent and bf16:
        if (gqa * r.qlen >= 128 or gqa > 64) and gqa != 48:
            qseq, key_gqa = 4, 32
        elif gqa * r.qlen >= 64 or gqa >= 16:
            qseq, key_gqa = 1, 64
    elif gfx950 and r.persistent and fp8:
        if (gqa == 32 and r.qlen >= 4) or (gqa == 64 and r.qlen >= 2) or gqa == 128:
            qseq, key_gqa = 4, 32
        elif (gqa == 16 and r.qlen in (3, 4)) or (gqa == 32 and r.qlen in (2, 3)) or (gqa == 64 and r.qlen == 1):
            qseq, key_gqa = 4, 16
    return KernelKey(q, kv, key_gqa, ps, qseq)


def kernel_key(r: MlaRequest) -> tuple[KernelKey | None, int, str | None]:
    """(table key, head fold factor, None) or (None, 1, why AITER refuses the call)."""
    gqa, fold = r.nhead, 1
    if r.persistent and not _native_persistent(r):
        if r.nhead not in FOLDABLE_HEADS:
            return None, 1, f"aiter/mla.py asserts: nhead={r.nhead} and max_seqlen_q={r.qlen} not supported (persistent)"
        gqa, fold = 16, r.nhead // 16
    key = _cpp_key(r, gqa)
    if isinstance(key, str):
        return None, fold, f"asm_mla.cu refuses the call: {key}"
    return key, fold, None


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def lookup(rows: list[dict], key: KernelKey) -> str | None:
    """knl_name of the first row get_heuristic_kernel_mla would take (prefill 0, cprr 0), or None."""
    wanted = {"qType": key.q_type, "kvType": key.kv_type, "Gqa": key.gqa, "ps": key.ps, "prefill": 0,
              "causal": key.causal, "qSeqLen": key.qseqlen, "lse": key.lse}
    for row in rows:
        if int(row.get("cprr") or 0) != 0:
            continue
        if all(str(row[col]).strip() == str(value) for col, value in wanted.items()):
            return row["knl_name"].strip()
    return None


def table_path(asm_dir: Path, arch: str) -> Path:
    return Path(asm_dir) / arch / "mla" / "mla_asm.csv"


def coverage(r: MlaRequest, asm_dir: Path) -> Coverage:
    """Which kernel AITER would launch for this request, read from the installed table."""
    key, fold, refused = kernel_key(r)
    if key is None:
        return Coverage(None, None, fold, refused)
    path = table_path(asm_dir, r.arch)
    if not path.exists():
        return Coverage(None, key, fold, f"no MLA kernel table at {path}")
    kernel = lookup(read_table(path), key)
    if kernel is None:
        how = f" (heads folded {fold}x onto the 16-head kernel)" if fold > 1 else ""
        return Coverage(None, key, fold, f"no row ({key.describe()}) in {r.arch}'s mla_asm.csv{how}: "
                                         "AITER aborts with 'cannot get heuristic kernel'")
    return Coverage(kernel, key, fold, None)
