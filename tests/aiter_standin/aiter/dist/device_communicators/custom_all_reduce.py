"""Stand-in for AITER's CustomAllreduce all-gather (same signatures), over the gloo group it is given.

Kept from AITER: world sizes 2/4/6/8 enable the communicator, but the all-gather kernel has cases
for 2, 4 and 8 only (at 6 it prints an error and writes nothing); every dim != 0 is gathered as the
last dim, whose bytes must be a multiple of 16; all_gather_reg reads an input registered by a
capture() block (anything else is an unknown IPC address: a memory fault on ROCm); with PyTorch's
expandable_segments allocator registration is switched off.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup

from aiter import _standin


def is_weak_contiguous(inp: torch.Tensor):
    return inp.is_contiguous() or (
        inp.untyped_storage().nbytes() - inp.storage_offset() * inp.element_size() == inp.numel() * inp.element_size())


def _expandable_segments() -> bool:
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        if "expandable_segments:true" in os.environ.get(name, "").replace(" ", "").lower():
            return True
    return False


class CustomAllreduce:
    _SUPPORTED_WORLD_SIZES: ClassVar[list[Any]] = [2, 4, 6, 8]
    _KERNEL_WORLD_SIZES = (2, 4, 8)

    def __init__(
        self,
        group: ProcessGroup,
        device: int | str | torch.device,
        max_size=1024 * 1024 * 1024,  # 2GB bf16/half
        enable_register_for_capturing: bool = True,
    ) -> None:
        self._IS_CAPTURING = False
        self.disabled = True
        assert dist.get_backend(group) != dist.Backend.NCCL, "CustomAllreduce should be attached to a non-NCCL group."
        self.group = group
        self.rank = dist.get_rank(group=group)
        self.world_size = dist.get_world_size(group=group)
        if self.world_size not in CustomAllreduce._SUPPORTED_WORLD_SIZES:
            return
        self.disabled = False
        self.enable_register_for_capturing = enable_register_for_capturing and not _expandable_segments()
        self.max_size = max_size
        self.fully_connected = True
        self._registered: set[int] = set()
        self._captured: set[int] = set()

    @contextmanager
    def capture(self):
        try:
            self._IS_CAPTURING = True
            yield
        finally:
            self._IS_CAPTURING = False
            if not self.disabled:
                self._registered |= self._captured  # flush_graph_buffers: the captured inputs become IPC-known
                _standin.record("register_graph_buffers", count=len(self._captured))

    def should_custom_ag(self, inp: torch.Tensor):
        if self.disabled:
            return False
        inp_size = inp.numel() * inp.element_size()
        if inp_size % 16 != 0:
            return False
        if not is_weak_contiguous(inp):
            return False
        if self.world_size == 2 or self.fully_connected:
            return inp_size <= (self.max_size / (self.world_size * 2))
        return False

    def _gather(self, inp: torch.Tensor, out: torch.Tensor | None, dim: int) -> torch.Tensor:
        last = dim != 0  # the kernel treats every dim != 0 as the last one
        shape = list(inp.shape)
        shape[-1 if last else 0] *= self.world_size
        out = torch.empty(shape, dtype=inp.dtype) if out is None else out
        assert is_weak_contiguous(out), "output tensor is not weak-contiguous"
        if self.world_size not in self._KERNEL_WORLD_SIZES:
            print(f"[aiter] allgather: world size {self.world_size} is not supported")  # and nothing is written
            return out
        if last and (inp.shape[-1] * inp.element_size()) % 16:
            raise RuntimeError(f"allgather: last dim of {inp.shape[-1] * inp.element_size()} bytes is not a "
                               "multiple of 16")
        parts = torch.empty((self.world_size * inp.shape[0], *inp.shape[1:]), dtype=inp.dtype)
        dist.all_gather_into_tensor(parts, inp.contiguous(), group=self.group)
        parts = parts.view(self.world_size, *inp.shape)
        out.copy_(torch.cat(list(parts), dim=-1 if last else 0).view(out.shape))
        return out

    def all_gather_reg(self, inp: torch.Tensor, out: torch.Tensor = None, dim: int = 0):
        _standin.record("all_gather_reg", dim=dim, capturing=self._IS_CAPTURING)
        if self._IS_CAPTURING:
            self._captured.add(inp.data_ptr())
        elif inp.data_ptr() not in self._registered:
            raise RuntimeError("all_gather_reg: the input was never registered by a capture() block "
                               "(an unknown IPC address: a memory access fault on ROCm)")
        return self._gather(inp, out, dim)

    def all_gather_unreg(
        self, inp: torch.Tensor, out: torch.Tensor = None, dim: int = 0
    ):
        _standin.record("all_gather_unreg", dim=dim, capturing=self._IS_CAPTURING)
        return self._gather(inp, out, dim)
