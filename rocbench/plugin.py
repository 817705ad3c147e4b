"""What a backend plugin needs (see README "Bring your own kernel"): register with `backends(family).register`, the
decorator the built-in backends use, and implement `prepare` (and optionally `unsupported_reason`, `tolerance`,
`supports`, `requires`, `platforms`)."""
from rocbench.core.axes import Case
from rocbench.core.suite import Backend, Backends, Prepared, RankContext, Tolerance


def backends(family: str) -> Backends:
    """The backend registry of a family (allgather, mla, moe, or any registered suite)."""
    from rocbench.core import registry

    if family not in registry.names():
        registry.discover("rocbench.suites")
    return registry.get(family).backends


__all__ = ["Backend", "Backends", "Case", "Prepared", "RankContext", "Tolerance", "backends"]
