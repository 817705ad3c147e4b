"""Fault injection beside the harness: test-only mutations of backend outputs, to show every gate can fail."""
