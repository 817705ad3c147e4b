"""The command line and config: a suite's command from its declared parameters (Typer) and `rocbench sweep`'s
YAML, both parsed by the same Params before anything runs."""
