"""Exceptions shared by every part of trustlab.

Every error a user can trigger with bad input derives from :class:`TrustlabError`, so the CLI can
print its message without a traceback, and library users can catch one type.
"""

from __future__ import annotations


class TrustlabError(Exception):
    """Base class for errors caused by the user's input or environment (not by a bug)."""


class ModelSpecError(TrustlabError, ValueError):
    """A model spec that names no model we can load (unknown form, empty folder, missing hub id)."""


class MissingExtraError(TrustlabError, ImportError):
    """An optional dependency is not installed. The message names the exact pip command."""


class CapabilityError(TrustlabError, NotImplementedError):
    """A method needs something the backend cannot provide (e.g. attentions from an HTTP endpoint)."""


class DataUnavailableError(TrustlabError, LookupError):
    """Data a method needs is not on this machine and cannot be fetched (offline, not cached). The message says
    where to put it or which variable names a local copy. The audit shows such a section as skipped."""


class EndpointError(TrustlabError, ConnectionError):
    """An OpenAI-compatible endpoint failed after bounded retries, or answered with an error."""


class ContextLengthError(TrustlabError, ValueError):
    """A prompt does not fit the model's context window and truncation was not allowed."""


class DataFileError(TrustlabError, ValueError):
    """A data or results file that cannot be read as what it should be (damaged JSONL, wrong JSON)."""


class EmptyInputError(TrustlabError, ValueError):
    """An empty prompt list, dataset or file where at least one item is needed."""


def require(module: str, extra: str, pip: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip command that installs it.

    Args:
        module: the importable module name, e.g. ``"transformers"``.
        extra: the trustlab extra that provides it, e.g. ``"llm"``.
        pip: an explicit install command when the module does not come from an extra.

    Example:
        >>> np = require("numpy", "llm")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        cmd = pip or f'pip install "trustlab[{extra}]"'
        raise MissingExtraError(f"{module!r} is not installed; install it with: {cmd}") from exc


class ParseError(TrustlabError, ValueError):
    """Model output (untrusted text) that is not in the grammar a parser accepts, or exceeds its bounds."""
