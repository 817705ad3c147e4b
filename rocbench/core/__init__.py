"""The harness: sweeps, rank launch, correctness gate, timing, results. Knows no kernel family."""
