"""Version checks for code that relies on another package's internals.

Attention steering (:mod:`trustlab.context.steering`) reaches into transformers: it registers a function in
``AttentionInterface``, swaps a module's ``config`` to select it, looks up each architecture's
``eager_attention_forward``, reads the 2D ``attention_mask`` that ``generate`` passes on every step and
falls back to the cache keyword (``past_key_values`` up to 5.23, ``cache`` from 5.24). Those are not public
contracts, so each such use names the transformers releases it was tested with, and a broken assumption
becomes a :class:`~trustlab.errors.CapabilityError` that says which release is installed and which range
was tested, instead of an ``IndexError`` deep inside a forward pass.

Outside the tested range the code still runs (a canary run of the newest releases must find out what
broke, not be refused up front); it warns once, and any assumption that fails raises.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

from trustlab.errors import CapabilityError

# Releases the transformers-internals code was run against (tests/context and tests/models pass on both).
TRANSFORMERS_TESTED = ">=5.23,<5.25"
_warned: set[str] = set()


@lru_cache(maxsize=1)
def transformers_version() -> str:
    """The installed transformers version string (``"missing"`` when it is not installed).

    Example:
        >>> transformers_version()
        '5.24.0'
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "missing"


def transformers_in(spec: str = TRANSFORMERS_TESTED, installed: str | None = None) -> bool:
    """Whether the installed (or the given) transformers version satisfies a PEP 440 specifier.

    Example:
        >>> transformers_in(">=5.23,<5.25", installed="5.24.0")
        True
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(installed or transformers_version()) in SpecifierSet(spec)
    except InvalidVersion:
        return False


def check_transformers(feature: str, tested: str = TRANSFORMERS_TESTED) -> None:
    """Warn once per feature when the installed transformers lies outside the range ``feature`` was tested with.

    Example:
        >>> check_transformers("attention steering")  # silent on a tested release
    """
    if feature not in _warned and not transformers_in(tested):
        _warned.add(feature)
        warnings.warn(f"{feature} relies on transformers internals and was tested with transformers {tested}; "
                      f"{transformers_version()} is installed. It fails with a CapabilityError if an assumption "
                      "no longer holds.", RuntimeWarning, stacklevel=3)


def incompatible(feature: str, problem: str, tested: str = TRANSFORMERS_TESTED) -> CapabilityError:
    """The error for a broken assumption about transformers internals, naming the installed and tested versions.

    Example:
        >>> raise incompatible("attention steering", "the attention mask is 4D")
        Traceback (most recent call last):
        trustlab.errors.CapabilityError: attention steering: the attention mask is 4D (transformers 5.24.0 ...
    """
    return CapabilityError(f"{feature}: {problem} (transformers {transformers_version()} is installed; {feature} "
                           f"was tested with transformers {tested}; install a tested release, e.g. "
                           f"pip install 'transformers{tested}')")


def attention_weights(output: Any, feature: str) -> Any:
    """The (batch, heads, queries, keys) weights an eager attention module returns as its second output.

    Hooks on attention modules rely on this return convention of transformers' eager kernels.

    Raises:
        CapabilityError: the module returned something else (see :func:`incompatible`).

    Example:
        >>> hook = lambda module, args, out: seen.append(attention_weights(out, "the scorer"))
    """
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if getattr(weights, "dim", lambda: 0)() != 4:
        raise incompatible(feature, "an eager attention module returned no (batch, heads, queries, keys) weights")
    return weights
