"""A ParamSet as Typer options: the only place that turns declared parameters into command-line flags."""
from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer

from rocbench.core.params import TEXT, TRISTATE, Param, ParamSet


def typer_parameter(param: Param) -> inspect.Parameter:
    """One keyword parameter whose annotation carries the typer.Option (help with the default, metavar, switch)."""
    help_text = param.help
    if param.kind == TEXT:
        if param.default is not None:
            on_cpu = f"; {param.cpu_default} without a GPU" if param.cpu_default is not None else ""
            help_text += f"  (default: {param.default}{on_cpu})"
        annotation = Annotated[Optional[list[str]] if param.multiple else Optional[str],
                               typer.Option(param.flag, help=help_text, hidden=param.hidden,
                                            metavar=param.metavar or ("LIST" if param.axis else "VALUE"),
                                            show_default=False)]
        default = None
    else:
        switch = param.flag if param.default is False else f"{param.flag}/--no-{param.flag[2:]}"
        annotation = Annotated[Optional[bool] if param.kind == TRISTATE else bool,
                               typer.Option(switch, help=help_text, hidden=param.hidden)]
        default = param.default
    return inspect.Parameter(param.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def signature(params: ParamSet) -> inspect.Signature:
    """The signature Typer reads a suite's command from (its parameters, in declaration order)."""
    return inspect.Signature([typer_parameter(p) for p in params.params], return_annotation=int)
