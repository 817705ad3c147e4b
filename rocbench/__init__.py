"""rocbench: correctness-gated kernel benchmarks for LLM serving paths (all-gather, MLA decode, MXFP4 MoE)."""

__version__ = "0.1.0"
