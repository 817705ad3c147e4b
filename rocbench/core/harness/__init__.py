"""The harness: gate and time one case on one rank (measure, gate, timing, kernel_time, clocks, invariance), the
rank processes and their isolation (ranks, isolate, launched, launcher, world), and a run end to end (sweep,
recorder, estimate, selfcheck). It knows no family and no command line; it may use reporting to write a run's
table and report, and the fault injection beside it."""
