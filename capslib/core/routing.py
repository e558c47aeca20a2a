"""Routing procedures, by name: the one place a new procedure is added.

A run chooses its procedure with one field, TrainConfig.routing_procedure (`--routing-procedure`); its
name is what the run's config, its checkpoint and its run name hold, and `checkpoint.model_for` hands
the function to the CapsNet. The paper's is `dynamic` (Procedure 1, capslib/core/model.py).

A procedure is a function with dynamic_routing's signature:

    procedure(u_hat, iterations, detach_early=False, bias=None, return_couplings=False)

    u_hat             B×in×out×D predictions û_{j|i}
    iterations        TrainConfig.routing_iterations
    detach_early      TrainConfig.detach_routing (a procedure without the notion may ignore it)
    bias              the official code's DigitCaps bias (out×D), or None
    return_couplings  also return the coupling coefficients, iterations×B×in×out (figures, explorer)

and returns the B×out×D parent capsules v_j (and the couplings when asked). Register it with one line:

    register_routing("uniform", "my_package.routing:uniform_routing", "c_ij = 1/out: no routing at all")

(or the function itself instead of its "module:function" path, as a test does). The path form keeps
this module plain data, like config.py, which checks a run's choice against ROUTING_PROCEDURES:
`capslib --help` and reading run logs never import torch for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .errors import CapslibError


@dataclass(frozen=True)
class RoutingProcedure:
    name: str
    about: str                     # one line, for --help and docs
    function: str | Callable       # "module:function" (imported when a model is built), or the function


# name -> procedure; TrainConfig.routing_procedure takes its choices from this dict as it stands
ROUTING_PROCEDURES: dict[str, RoutingProcedure] = {}


def register_routing(name: str, function: str | Callable, about: str) -> RoutingProcedure:
    """Add a routing procedure under `name` (a name taken already is an error: runs record names)."""
    if name in ROUTING_PROCEDURES:
        raise CapslibError(f"routing procedure {name!r} is registered already")
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise CapslibError(f"routing procedure name {name!r}: letters, digits and '-' only (it is part of run names)")
    ROUTING_PROCEDURES[name] = procedure = RoutingProcedure(name, about, function)
    return procedure


def routing_function(name: str) -> Callable:
    """The function of the procedure called `name` (imported now if registered by its path)."""
    try:
        function = ROUTING_PROCEDURES[name].function
    except KeyError:
        raise CapslibError(f"unknown routing procedure {name!r}; choose one of {', '.join(ROUTING_PROCEDURES)}") from None
    if callable(function):
        return function
    module, _, attribute = function.partition(":")
    return getattr(importlib.import_module(module), attribute)


register_routing("dynamic", "capslib.core.model:dynamic_routing",
                 "Procedure 1 (the paper): routing by agreement, logits from zero, softmax over the parents")
