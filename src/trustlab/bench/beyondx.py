"""BeyondX: algebra word problems with 3, 4 and 5 unknowns (Kao, Wang and Hsieh 2024), loading and scoring.

The benchmark's 464 items (BeyondX_3 = 194, BeyondX_4 = 158, BeyondX_5 = 112) are CC BY-SA 4.0 and test-only:
training on them is prohibited by their licence. trustlab never ships them: :func:`load_beyondx` reads the
official JSON files from a folder or file you give (or ``$TRUSTLAB_BEYONDX_DATA``), or from the Hugging Face
Hub (``Johnson0213/BeyondX``, needs ``datasets`` and internet).

Scoring is the official set-style match: an answer is correct when every gold value is matched by some
predicted number within an absolute tolerance of 0.1 (:func:`score_beyondx`); :func:`score_relative` is the
relative-tolerance variant reported beside it.

Example:
    >>> items = load_beyondx("../shared/data/beyondx")
    >>> len(items), items[0].unknowns, items[0].answers
    (464, 3, (63.0, 28.0, 10.0))
    >>> score_beyondx([10, 63, 28.04], items[0].answers)
    True
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.errors import DataFileError, EmptyInputError, TrustlabError
from trustlab.prompting.answers import parse_number

HUB_ID = "Johnson0213/BeyondX"
LEVELS = (3, 4, 5)
LICENCE = "CC BY-SA 4.0 (test-only: training on BeyondX is prohibited)"
DEFAULT_DIRS = (Path("../shared/data/beyondx"),)
TOL_ABS = 0.1
TOL_REL = 0.01


@dataclass(frozen=True)
class BeyondXItem:
    """One word problem.

    Attributes:
        id: ``"<unknowns>-<official id>"``, unique across the three files (the official ids restart per file).
        problem: the word problem.
        equations: the gold system of equations, one string per equation.
        answers: the gold value of each unknown, in the order of ``ans``.
        unknowns: the number of unknowns (3, 4 or 5 for BeyondX; 2 to 5 for generated items).
        source: where the seed problem came from (``ALG514``, ``DRAW-1K``; ``generated`` for ours).
    """

    id: str
    problem: str
    equations: tuple[str, ...]
    answers: tuple[float, ...]
    unknowns: int
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "problem": self.problem, "system_of_equations": list(self.equations),
                "ans": [f"{a:g}" for a in self.answers], "unknowns": self.unknowns, "source": self.source}


def _item(row: Any, unknowns: int | None, where: str) -> BeyondXItem:
    if not isinstance(row, dict):
        raise DataFileError(f"{where}: an item is not a JSON object: {str(row)[:80]}")
    missing = [k for k in ("problem", "system_of_equations", "ans") if k not in row]
    if missing:
        raise DataFileError(f"{where}: item {row.get('id', '?')} lacks {', '.join(missing)} "
                            "(BeyondX items have problem, system_of_equations, ans, id, source)")
    answers = [parse_number(a) for a in row["ans"]]
    if not answers or any(a is None for a in answers):
        raise DataFileError(f"{where}: item {row.get('id', '?')} has an answer that is not a number: {row['ans']}")
    n = unknowns or int(row.get("unknowns") or len(answers))
    if not str(row["problem"]).strip():
        raise DataFileError(f"{where}: item {row.get('id', '?')} has an empty problem")
    return BeyondXItem(id=f"{n}-{row.get('id', '?')}", problem=str(row["problem"]).strip(),
                       equations=tuple(str(e) for e in row["system_of_equations"]),
                       answers=tuple(float(a) for a in answers), unknowns=n, source=str(row.get("source", "")))


def _level_of(path: Path) -> int | None:
    m = re.search(r"BeyondX_(\d)", path.name)
    return int(m.group(1)) if m else None


def _read(path: Path, levels: Sequence[int]) -> list[BeyondXItem]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: not a readable BeyondX JSON file ({exc})") from exc
    if not isinstance(rows, list):
        raise DataFileError(f"{path}: a BeyondX file holds a JSON list of items, got {type(rows).__name__}")
    items = [_item(r, _level_of(path), str(path)) for r in rows]
    return [it for it in items if it.unknowns in levels]


def default_data_dir() -> Path | None:
    """``$TRUSTLAB_BEYONDX_DATA``, else the first existing folder of :data:`DEFAULT_DIRS`, else None."""
    env = os.environ.get("TRUSTLAB_BEYONDX_DATA")
    if env:
        return Path(env)
    return next((d for d in DEFAULT_DIRS if d.exists()), None)


def load_beyondx(source: str | os.PathLike | None = None, *, levels: Sequence[int] = LEVELS) -> list[BeyondXItem]:
    """Load BeyondX items, in file order, level by level.

    Args:
        source: a folder with ``BeyondX_3.json``, ``BeyondX_4.json``, ``BeyondX_5.json``; one such file (or any
            JSON list of items with ``problem``, ``system_of_equations`` and ``ans``); the Hub id
            ``"Johnson0213/BeyondX"``; or None: ``$TRUSTLAB_BEYONDX_DATA`` or ``../shared/data/beyondx`` when it
            exists, else the Hub.
        levels: the numbers of unknowns to keep.

    Raises:
        DataFileError: a file that is not BeyondX JSON (the message names the item).
        EmptyInputError: no item at the asked levels.
        TrustlabError: the Hub is unreachable or ``datasets`` is missing (with what to do instead).
    """
    levels = tuple(levels)
    src = default_data_dir() if source is None else source
    if src is None or str(src) == HUB_ID:
        items = _from_hub(levels)
    else:
        path = Path(src)
        if path.is_dir():
            files = [path / f"BeyondX_{k}.json" for k in levels if (path / f"BeyondX_{k}.json").exists()]
            if not files:
                raise DataFileError(f"{path}: no BeyondX_<3|4|5>.json file for levels {levels}")
            items = [it for f in files for it in _read(f, levels)]
        elif path.is_file():
            items = _read(path, levels)
        else:
            raise DataFileError(f"{path}: no such file or folder (give the folder of the official BeyondX JSON "
                                f"files, or {HUB_ID!r} to load it from the Hub)")
    if not items:
        raise EmptyInputError(f"no BeyondX item with {levels} unknowns in {src or HUB_ID}")
    return items


def _from_hub(levels: Sequence[int]) -> list[BeyondXItem]:
    try:
        import datasets
    except ImportError as exc:
        raise TrustlabError(f"loading {HUB_ID} from the Hub needs `pip install datasets`; or give the folder of "
                            "the official BeyondX JSON files") from exc
    items: list[BeyondXItem] = []
    try:
        ds = datasets.load_dataset(HUB_ID)
    except Exception as exc:  # offline, renamed, gated: say what to do
        raise TrustlabError(f"could not load {HUB_ID} from the Hub ({type(exc).__name__}: {exc}); give the folder "
                            "of the official BeyondX JSON files instead") from exc
    for split_name, split in ds.items():
        level = _level_of(Path(split_name))
        items += [_item(dict(r), level, f"{HUB_ID}:{split_name}") for r in split]
    return [it for it in items if it.unknowns in levels]


def score_beyondx(predicted: Sequence[float], gold: Sequence[float], tol_abs: float = TOL_ABS) -> bool:
    """The official metric: every gold value has some predicted number within ``tol_abs`` (set-style match).

    Example:
        >>> score_beyondx([4.0, 6.0], [6, 4]), score_beyondx([6.0], [6, 4])
        (True, False)
    """
    return bool(gold) and all(any(abs(p - g) < tol_abs for p in predicted) for g in gold)


def score_relative(predicted: Sequence[float], gold: Sequence[float], rel_tol: float = TOL_REL) -> bool:
    """The relative-tolerance variant: every gold value g has a prediction within ``rel_tol * max(|g|, 1)``."""
    return bool(gold) and all(any(abs(p - g) <= rel_tol * max(abs(g), 1.0) for p in predicted) for g in gold)


def split_dev_test(items: Sequence[BeyondXItem], *, test_per_level: int, dev_per_level: int,
                   seed: int = 0) -> tuple[list[BeyondXItem], list[BeyondXItem]]:
    """Disjoint dev and test slices per number of unknowns, drawn with a fixed seed (dev picks demos; the
    official code picked them on the first 20 test problems, which leaks test data).

    Returns:
        (dev, test), each ordered by level then by the draw.
    """
    rng = random.Random(seed)
    dev: list[BeyondXItem] = []
    test: list[BeyondXItem] = []
    for level in sorted({it.unknowns for it in items}):
        pool = [it for it in items if it.unknowns == level]
        rng.shuffle(pool)
        if len(pool) < dev_per_level + test_per_level:
            raise EmptyInputError(f"{len(pool)} items with {level} unknowns: fewer than {dev_per_level} dev + "
                                  f"{test_per_level} test")
        dev += pool[:dev_per_level]
        test += pool[dev_per_level:dev_per_level + test_per_level]
    return dev, test
