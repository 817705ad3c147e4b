"""A NumPy interpreter for the few PTX instructions of rocbench's inline decodes, so that CPU tests run the very
strings the kernels ship rather than a second copy of their bit tricks. It knows mov (also a 32-bit register split
into two 16-bit ones), prmt (default mode), shl, shf.l.wrap (funnel shift), shr.u32, and, or, fma.rn.bf16x2,
mul.rn.f16x2, cvt.rn.f16x2.e4m3x2 and setp.ne.s32, element-wise over arrays, and runs no predicated prefetch (a cache
hint changes no value); anything else is an error, never skipped."""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
import torch

_INSTRUCTION = re.compile(r"^([a-z0-9.]+)\s+(.*)$")


def _bf16x2_to_float(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two bf16 lanes of each word as float64 (low lane first); bf16 is fp32's upper half."""
    low = (words << 16).astype(np.uint32).view(np.float32).astype(np.float64)
    high = (words & 0xFFFF0000).astype(np.uint32).view(np.float32).astype(np.float64)
    return low, high


def _float_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round to nearest even bf16 (through fp32, exact for the decodes' products: a 3-bit code times a power of two)."""
    with np.errstate(over="ignore"):  # beyond fp32's range is beyond bf16's: inf either way
        as_bf16 = torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)
    return as_bf16.view(torch.int16).numpy().astype(np.uint32) & 0xFFFF


def _fma_bf16x2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    lanes = [_float_to_bf16_bits(x * y + z) for x, y, z in zip(_bf16x2_to_float(a), _bf16x2_to_float(b),
                                                               _bf16x2_to_float(c))]
    return (lanes[0] | (lanes[1] << 16)).astype(np.uint32)


def _f16x2(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    halves = (words & 0xFFFF, words >> 16)
    return tuple(h.astype(np.uint16).view(np.float16).astype(np.float64) for h in halves)


def _mul_f16x2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Round to nearest even fp16 of each lane's exact product (NumPy's float64 -> float16 rounds correctly)."""
    with np.errstate(over="ignore"):
        lanes = [(x * y).astype(np.float16).view(np.uint16).astype(np.uint32) for x, y in zip(_f16x2(a), _f16x2(b))]
    return lanes[0] | (lanes[1] << 16)


def _cvt_f16x2_e4m3x2(h: np.ndarray) -> np.ndarray:
    """Two e4m3 bytes (the low one to the low lane) to fp16x2, exactly (fp16 holds every e4m3 value)."""
    def one(byte: np.ndarray) -> np.ndarray:
        as_e4m3 = torch.from_numpy(byte.astype(np.uint8)).view(torch.float8_e4m3fn)
        return as_e4m3.to(torch.float16).view(torch.int16).numpy().astype(np.uint32) & 0xFFFF
    return one(h & 0xFF) | (one((h >> 8) & 0xFF) << 16)


def _prmt(a: np.ndarray, b: np.ndarray, selector: np.ndarray) -> np.ndarray:
    """prmt.b32 in its default mode: byte i of the result is byte (selector nibble i & 7) of {b, a}; a nibble with
    bit 3 set replicates that byte's sign bit instead."""
    pool = (a.astype(np.uint64) | (b.astype(np.uint64) << 32))
    out = np.zeros_like(a, dtype=np.uint32)
    for i in range(4):
        nibble = (selector >> (4 * i)) & 0xF
        byte = ((pool >> ((nibble & 7).astype(np.uint64) * 8)) & 0xFF).astype(np.uint32)
        byte = np.where(nibble & 8, np.where(byte & 0x80, 0xFF, 0), byte).astype(np.uint32)
        out |= byte << (8 * i)
    return out


def run_ptx(asm: str, operands: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run `asm` with $k bound to operands[k] (uint32 arrays; None for outputs) and return every operand after it,
    outputs included."""
    regs: dict[str, np.ndarray] = {}
    # 64-bit operands (addresses, "l" constraints) stay 64-bit
    values = [None if x is None else np.asarray(x, dtype=np.uint64 if np.asarray(x).dtype == np.uint64 else np.uint32)
              for x in operands]
    shape = next(v.shape for v in values if v is not None)

    def read(token: str) -> np.ndarray:
        token = token.strip()
        if token.startswith("$"):
            value = values[int(token[1:])]
        elif re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", token):
            value = np.full(shape, int(token, 0) & 0xFFFFFFFF, dtype=np.uint32)
        else:
            value = regs[token]
        if value is None:
            raise ValueError(f"{token} read before it was written")
        return value

    def write(token: str, value: np.ndarray) -> None:
        token = token.strip()
        value = value if value.dtype == np.bool_ else value.astype(np.uint32)
        if token.startswith("$"):
            values[int(token[1:])] = value
        else:
            regs[token] = value

    for statement in asm.split(";"):
        statement = statement.strip().lstrip("{}").strip()
        if not statement or statement.startswith(".reg") or statement == "}":
            continue
        predicate = re.match(r"^@(!?)(\w+)\s+(.*)$", statement)
        if predicate:  # only prefetches are predicated in the kernels' asm: they change no value, so run none
            if not predicate.group(3).startswith("prefetch."):
                raise ValueError(f"the emulator runs no predicated {predicate.group(3)!r}")
            read(predicate.group(2))
            continue
        match = _INSTRUCTION.match(statement)
        if not match:
            raise ValueError(f"cannot parse PTX statement {statement!r}")
        split = re.fullmatch(r"mov\.b32\s*\{\s*(\w+)\s*,\s*(\w+)\s*\}\s*,\s*(\S+)", statement)
        if split:  # a 32-bit value into two 16-bit registers, the low half first
            whole = read(split.group(3))
            write(split.group(1), whole & 0xFFFF)
            write(split.group(2), whole >> 16)
            continue
        op, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        dst, srcs = args[0], [read(a) for a in args[1:]]
        if op in ("mov.b32", "mov.u32"):
            result = srcs[0]
        elif op == "setp.ne.s32":
            result = srcs[0].astype(np.uint32) != srcs[1].astype(np.uint32)
        elif op == "prmt.b32":
            result = _prmt(*srcs)
        elif op == "shl.b32":
            result = (srcs[0].astype(np.uint64) << srcs[1].astype(np.uint64)) & 0xFFFFFFFF
        elif op == "shf.l.wrap.b32":  # the top word of {b, a} shifted left by c mod 32 (a == b: a rotation)
            wide = (srcs[1].astype(np.uint64) << 32) | srcs[0].astype(np.uint64)
            result = (wide << (srcs[2].astype(np.uint64) & 31)) >> 32 & 0xFFFFFFFF
        elif op == "shr.u32":
            result = srcs[0] >> srcs[1]
        elif op == "and.b32":
            result = srcs[0] & srcs[1]
        elif op == "or.b32":
            result = srcs[0] | srcs[1]
        elif op == "fma.rn.bf16x2":
            result = _fma_bf16x2(*srcs)
        elif op == "mul.rn.f16x2":
            result = _mul_f16x2(*srcs)
        elif op == "cvt.rn.f16x2.e4m3x2":
            result = _cvt_f16x2_e4m3x2(srcs[0])
        else:
            raise ValueError(f"the emulator does not know PTX {op!r}")
        write(dst, result)
    return values


class _AsmCall:
    def __init__(self, results):
        self._results = results

    def get_result(self, index: int):
        return self._results[index]


def _registers(data: np.ndarray, bits: int, pack: int) -> np.ndarray:
    """A tensor's elements (flattened, C order) as the 32-bit registers of its inline-asm groups of `pack`
    elements: [groups, registers], the lowest element in each register's low bits (Triton packs a vector of
    narrow elements into a register, little-endian); 64-bit elements (addresses) one per 64-bit register."""
    if bits == 64:
        return data.reshape(-1).view(np.uint64).reshape(-1, pack)
    per_register = max(1, 32 // bits)
    lanes = data.reshape(-1).view(f"u{bits // 8}").astype(np.uint64).reshape(-1, pack)
    lanes = lanes.reshape(lanes.shape[0], -1, min(per_register, pack))
    shifts = (np.arange(lanes.shape[2], dtype=np.uint64) * bits)[None, None, :]
    return (np.bitwise_or.reduce(lanes << shifts, axis=2) & 0xFFFFFFFF).astype(np.uint32)


def _elements(registers: list[np.ndarray], bits: int, pack: int, shape, np_dtype) -> np.ndarray:
    per_register = max(1, 32 // bits)
    regs = np.stack(registers, axis=1).astype(np.uint64)  # [groups, registers]
    shifts = (np.arange(min(per_register, pack), dtype=np.uint64) * bits)[None, None, :]
    lanes = (regs[:, :, None] >> shifts) & ((1 << bits) - 1)
    return lanes.reshape(-1).astype(f"u{bits // 8}").view(np_dtype).reshape(shape)


def interpreted_inline_asm(asm, constraints, values, types, is_pure, pack):
    """What tl.inline_asm_elementwise does on a GPU, for Triton's interpreter (which refuses inline asm): the
    operands are grouped `pack` elements at a time in flattened order and packed into 32-bit registers, and the
    asm runs in run_ptx. On the GPU a group is `pack` consecutive elements of a thread's registers; a kernel's
    elements are grouped alike where the innermost dimension is held contiguously by each thread, as the decodes
    that use this arrange (their loads' 16 contiguous bytes per thread)."""
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle, _get_np_dtype

    constraint_list = [c.strip() for c in constraints.split(",")]
    inputs = []
    for value in values:
        bits = 64 if isinstance(value.dtype.scalar, tl.pointer_type) else value.get_element_ty().primitive_bitwidth
        regs = _registers(value.data, bits, pack)
        inputs.extend(regs[:, r] for r in range(regs.shape[1]))
    out_types = [ty.element_ty if hasattr(ty, "element_ty") else ty for ty in types]
    out_counts = [max(1, pack * ty.primitive_bitwidth // 32) for ty in out_types]
    if len(constraint_list) != sum(out_counts) + len(inputs):
        raise ValueError(f"constraints {constraints!r} do not match {len(inputs)} input and "
                         f"{sum(out_counts)} output registers")
    operands = run_ptx(asm, [None] * sum(out_counts) + inputs)
    shape = values[0].data.shape
    results, first = [], 0
    for ty, count in zip(out_types, out_counts):
        data = _elements(operands[first:first + count], ty.primitive_bitwidth, pack, shape, _get_np_dtype(ty))
        results.append(TensorHandle(data, ty))
        first += count
    return _AsmCall(results)


def inline_asm_emulated():
    """Within it, Triton's interpreter runs tl.inline_asm_elementwise through interpreted_inline_asm."""
    from triton.runtime.interpreter import InterpreterBuilder

    return mock.patch.object(InterpreterBuilder, "create_inline_asm",
                             lambda self, *args: interpreted_inline_asm(*args))


def bf16_dots_in_fp32():
    """Within it, Triton's interpreter multiplies bf16 dot operands as their exact fp32 values. Its own tl.dot
    multiplies the uint16 words that hold bf16 values, as integers (which is why the CPU tests run fp16/fp32)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    saved = InterpreterBuilder.create_dot

    def exact(handle):
        if handle.get_element_ty() == tl.bfloat16:
            return (handle.data.astype(np.uint32) << 16).view(np.float32)
        return handle.data.astype(np.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if tl.bfloat16 not in (a.get_element_ty(), b.get_element_ty()):
            return saved(self, a, b, d, input_precision, max_num_imprecise_acc)
        return TensorHandle(np.matmul(exact(a), exact(b)) + d.data, d.dtype.scalar)

    return mock.patch.object(InterpreterBuilder, "create_dot", create_dot)
