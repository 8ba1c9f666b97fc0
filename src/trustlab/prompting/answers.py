"""Read final answers out of model text: the last ``\\boxed{...}``, and the numbers in it.

Model output is untrusted text: numbers are read with a regular expression and turned into floats with
``float`` on the matched digits only (never ``eval``); a fraction ``a/b`` becomes a / b.

Example:
    >>> extract_numbers("so x = 3.\\nThe answer is \\\\boxed{63, 28, \\\\$1,200 and 1/4}")
    [63.0, 28.0, 1200.0, 0.25]
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\s*\{")
_NUMBER = re.compile(r"(?<![\w.])(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?(\s*%)?")
MAX_NUMBERS = 20
MAX_NUMBER_CHARS = 30


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None when there is none.

    Example:
        >>> extract_boxed("a \\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}, 3}")
        '\\\\frac{1}{2}, 3'
    """
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    start, depth = starts[-1], 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]  # unclosed: the model stopped inside the box


_FRAC = re.compile(r"\\d?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*([\d.,]+)\s*\}")


def extract_numbers(text: str, *, boxed_only: bool = False) -> list[float]:
    """The numbers of a final answer: those in the last ``\\boxed{}``, else (unless ``boxed_only``) those on
    the last line that has any. ``1,200`` is 1200, ``3/4`` is 0.75, ``\\frac{3}{4}`` is 0.75, ``5%`` is 5.

    Returns:
        At most :data:`MAX_NUMBERS` floats, in order; an empty list when there is no answer.
    """
    if not isinstance(text, str):
        return []
    boxed = extract_boxed(text)
    if boxed is None:
        if boxed_only:
            return []
        lines = [ln for ln in text.strip().splitlines() if _NUMBER.search(ln)]
        boxed = lines[-1] if lines else ""
    boxed = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", boxed.replace("\\$", "").replace("$", ""))
    out: list[float] = []
    for m in _NUMBER.finditer(boxed):
        num, den = m.group(1), m.group(2)
        if len(num) > MAX_NUMBER_CHARS or (den and len(den) > MAX_NUMBER_CHARS):
            continue
        value = float(num.replace(",", ""))
        if den:
            d = float(den)
            if d == 0:
                continue
            value /= d
        out.append(value)
        if len(out) >= MAX_NUMBERS:
            break
    return out


def parse_number(text: str) -> float | None:
    """One number written as text (``"63"``, ``"2.5"``, ``"1,200"``, ``"3/4"``), or None.

    Example:
        >>> parse_number("3/4"), parse_number("n/a")
        (0.75, None)
    """
    nums = extract_numbers(str(text))
    return nums[0] if len(nums) == 1 else None
