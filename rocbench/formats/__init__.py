"""Data formats that kernels and suites share: fp8 flavours, paged KV cache, MXFP4 and its layouts."""
