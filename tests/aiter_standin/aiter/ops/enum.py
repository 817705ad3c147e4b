"""AITER's ActivationType and QuantType (C++ enums there; the members rocbench uses)."""
import enum


class ActivationType(enum.IntEnum):
    No = 0
    Silu = 1
    Gelu = 2
    Swiglu = 3


class QuantType(enum.IntEnum):
    No = 0
    per_Tensor = 1
    per_Token = 2
    per_1x32 = 3
    per_1x128 = 4


class MlaVersion(enum.IntEnum):
    V32 = 0
