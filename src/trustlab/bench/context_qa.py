"""Context QA: counterfactual facts the project generates, and SQuAD / QuAC / DROP loaders for users online.

Counterfactual items put a false version of a well-known fact into a short passage of public-domain prose
and ask about it: an answer that follows the context gives the passage's (false) answer; an answer from the
model's memory gives the real one. SQuAD v1, QuAC and DROP load through ``datasets`` from the Hub or from
local JSON/JSONL files in the Hub format; all become :class:`QAItem` and are scored with SQuAD's EM / F1.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.bench.niah import haystack_text
from trustlab.errors import EmptyInputError, require

QA_INSTRUCTION = "\nAnswer the question according to the above passage: "  # the paper's lm-eval prompt


@dataclass(frozen=True)
class QAItem:
    """One context-question pair.

    Attributes:
        id: a stable id (for resuming).
        context: the passage the answer must come from.
        question: the question.
        answers: gold answers (any one counts).
        memory_answer: for counterfactual items, the real-world answer the context contradicts.
    """

    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    memory_answer: str | None = None


# (statement with {} for the object, question, real object, counterfactual object)
FACTS: tuple[tuple[str, str, str, str], ...] = (
    ("The capital of France is {}.", "What is the capital of France?", "Paris", "Lyon"),
    ("The capital of Japan is {}.", "What is the capital of Japan?", "Tokyo", "Osaka"),
    ("The capital of Italy is {}.", "What is the capital of Italy?", "Rome", "Milan"),
    ("The capital of Germany is {}.", "What is the capital of Germany?", "Berlin", "Hamburg"),
    ("The capital of Spain is {}.", "What is the capital of Spain?", "Madrid", "Seville"),
    ("The capital of England is {}.", "What is the capital of England?", "London", "Manchester"),
    ("The capital of Russia is {}.", "What is the capital of Russia?", "Moscow", "Kazan"),
    ("The capital of Egypt is {}.", "What is the capital of Egypt?", "Cairo", "Luxor"),
    ("The capital of Canada is {}.", "What is the capital of Canada?", "Ottawa", "Calgary"),
    ("The capital of China is {}.", "What is the capital of China?", "Beijing", "Chengdu"),
    ("The largest planet in the solar system is {}.", "What is the largest planet in the solar system?",
     "Jupiter", "Neptune"),
    ("The planet closest to the Sun is {}.", "Which planet is closest to the Sun?", "Mercury", "Saturn"),
    ("The Red Planet is the name people give to {}.", "Which planet is called the Red Planet?", "Mars", "Venus"),
    ("Romeo and Juliet was written by {}.", "Who wrote Romeo and Juliet?", "Shakespeare", "Dickens"),
    ("The Mona Lisa was painted by {}.", "Who painted the Mona Lisa?", "Leonardo", "Rembrandt"),
    ("The telephone was invented by {}.", "Who invented the telephone?", "Bell", "Faraday"),
    ("The theory of relativity was developed by {}.", "Who developed the theory of relativity?", "Einstein",
     "Newton"),
    ("The chemical symbol for gold is {}.", "What is the chemical symbol for gold?", "Au", "Gd"),
    ("Water is made of hydrogen and {}.", "Water is made of hydrogen and which other element?", "oxygen",
     "nitrogen"),
    ("The largest ocean on Earth is the {} Ocean.", "What is the largest ocean on Earth?", "Pacific", "Arctic"),
    ("The tallest mountain on Earth is Mount {}.", "What is the tallest mountain on Earth?", "Everest",
     "Kilimanjaro"),
    ("The longest river in Africa is the {}.", "What is the longest river in Africa?", "Nile", "Congo"),
    ("The fastest land animal is the {}.", "What is the fastest land animal?", "cheetah", "tortoise"),
    ("The largest mammal is the blue {}.", "What is the largest mammal?", "whale", "rhinoceros"),
    ("A spider has {} legs.", "How many legs does a spider have?", "eight", "six"),
    ("A week has {} days.", "How many days does a week have?", "seven", "nine"),
    ("The colour of a clear daytime sky is {}.", "What colour is a clear daytime sky?", "blue", "green"),
    ("Bananas are usually {} when ripe.", "What colour are ripe bananas?", "yellow", "purple"),
    ("The freezing point of water is {} degrees Celsius.", "At how many degrees Celsius does water freeze?",
     "zero", "forty"),
    ("The official language of Brazil is {}.", "What is the official language of Brazil?", "Portuguese",
     "Spanish"),
    ("The currency of Japan is the {}.", "What is the currency of Japan?", "yen", "peso"),
    ("The Great Wall is located in {}.", "In which country is the Great Wall?", "China", "Peru"),
    ("The Eiffel Tower is located in {}.", "In which city is the Eiffel Tower?", "Paris", "Vienna"),
    ("Bees make {}.", "What do bees make?", "honey", "cheese"),
    ("The first man on the Moon was Neil {}.", "Who was the first man on the Moon?", "Armstrong", "Jenkins"),
    ("The primary gas that plants absorb from the air is carbon {}.",
     "Which gas do plants absorb from the air?", "dioxide", "monoxide"),
)


def _filler(rng: random.Random, n_sentences: int) -> list[str]:
    sentences = re.split(r"(?<=[.!?]) ", haystack_text())
    start = rng.randrange(0, len(sentences) - n_sentences)
    return sentences[start:start + n_sentences]


def counterfactual_items(n: int | None = None, *, filler_sentences: int = 4, seed: int = 0) -> list[QAItem]:
    """Context-QA items whose passages contradict well-known facts.

    Args:
        n: how many items (default: all ``len(FACTS)``).
        filler_sentences: public-domain sentences around the counterfactual statement (context length).
        seed: picks the filler and the statement's position.

    Example:
        >>> item = counterfactual_items(1)[0]
        >>> item.answers, item.memory_answer
        (('Lyon',), 'Paris')
    """
    rng = random.Random(seed)
    items = []
    for i, (statement, question, real, fake) in enumerate(FACTS[: n or len(FACTS)]):
        filler = _filler(rng, filler_sentences)
        filler.insert(rng.randint(0, len(filler)), statement.format(fake))
        items.append(QAItem(id=f"cf-{i}", context=" ".join(filler), question=question, answers=(fake,),
                            memory_answer=real))
    return items


def qa_prompt(item: QAItem, indicator: str = "") -> str:
    """The paper's context-QA prompt: passage, instruction, question (+ an optional indicator like " [IND]")."""
    return f"{item.context}{QA_INSTRUCTION}{item.question}{indicator}"


# ---------------------------------------------------------------------------------------- scoring
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, answers: tuple[str, ...]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1(prediction: str, answers: tuple[str, ...]) -> float:
    """Best token-level F1 of ``prediction`` against any gold answer."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for a in answers:
        gold = normalize_answer(a).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def contains(prediction: str, answer: str) -> bool:
    """Whether ``answer`` appears as whole words in ``prediction`` (both normalised)."""
    return f" {normalize_answer(answer)} " in f" {normalize_answer(prediction)} "


def follows_context(prediction: str, item: QAItem) -> float:
    """1 if the answer gives the context's answer and not the contradicted real one, else 0."""
    hit = any(contains(prediction, a) for a in item.answers)
    memory = item.memory_answer is not None and contains(prediction, item.memory_answer)
    return float(hit and not memory)


# ---------------------------------------------------------------------------------------- loaders
HUB_IDS = {"squad": "rajpurkar/squad", "quac": "allenai/quac", "drop": "ucinlp/drop"}


def _squad(row: dict[str, Any]) -> list[QAItem]:
    return [QAItem(str(row["id"]), row["context"], row["question"], tuple(row["answers"]["text"]))]


def _quac(row: dict[str, Any]) -> list[QAItem]:
    out = []
    for i, (question, texts) in enumerate(zip(row["questions"], row["answers"]["texts"])):
        golds = tuple(t for t in texts if t != "CANNOTANSWER")
        if golds:
            out.append(QAItem(f"{row['dialogue_id']}-{i}", row["context"], question, golds))
    return out


def _drop(row: dict[str, Any]) -> list[QAItem]:
    spans = tuple(row["answers_spans"]["spans"])
    return [QAItem(str(row["query_id"]), row["passage"], row["question"], spans)] if spans else []


_CONVERTERS = {"squad": _squad, "quac": _quac, "drop": _drop}


def load_qa(name: str, source: str | Path | None = None, *, split: str = "validation",
            limit: int | None = None) -> list[QAItem]:
    """Load SQuAD v1, QuAC or DROP as :class:`QAItem` through ``datasets``.

    Args:
        name: ``"squad"``, ``"quac"`` or ``"drop"`` (selects the record format).
        source: a local ``.json``/``.jsonl`` file in the Hub format, or a Hub id (default: the usual id,
            which needs network access).
        split: the split to read from the Hub (local files have one split).
        limit: keep the first ``limit`` items.

    Example:
        >>> items = load_qa("squad", limit=200)             # online
        >>> items = load_qa("drop", "drop_sample.jsonl")    # offline, same format
    """
    if name not in _CONVERTERS:
        raise ValueError(f"unknown QA dataset {name!r}; choose one of {sorted(_CONVERTERS)}")
    datasets = require("datasets", "llm", pip="pip install datasets")
    source = source or HUB_IDS[name]
    if Path(source).suffix in (".json", ".jsonl"):
        rows = datasets.load_dataset("json", data_files=str(source), split="train")
    else:
        rows = datasets.load_dataset(str(source), split=split)
    items: list[QAItem] = []
    for row in rows:
        items += _CONVERTERS[name](row)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise EmptyInputError(f"no answerable {name} items in {source}")
    return items[:limit]


# ---------------------------------------------------------------------------------------- scorer data
_PEOPLE = ("Captain Orrin", "Lady Veska", "Doctor Marlo", "Professor Tamsin", "Admiral Quell", "Sister Abena",
           "Master Ilvo", "Judge Penhale")
_ATTRIBUTES = (("favourite colour", ("teal", "amber", "crimson", "violet")),
               ("home town", ("Kelmar", "Dunsby", "Varn", "Hollin")),
               ("secret number", ("4471", "9023", "3318", "6650")),
               ("pet's name", ("Biscuit", "Pepper", "Juniper", "Marlow")))


def context_conversations(n: int, *, seed: int = 0, filler_sentences: int = 3) -> list[list[dict[str, str]]]:
    """Context-dependent chats: a passage with an invented fact, a question on it, the answer from the passage.

    Example:
        >>> context_conversations(1)[0][1]["content"]  # e.g. 'The home town of Lady Veska is Varn.'
    """
    rng = random.Random(seed)
    convs = []
    for _ in range(n):
        person, (attr, values) = rng.choice(_PEOPLE), rng.choice(_ATTRIBUTES)
        fact = f"The {attr} of {person} is {rng.choice(values)}."
        passage = _filler(rng, filler_sentences)
        passage.insert(rng.randint(0, len(passage)), fact)
        convs.append([{"role": "user", "content": f"{' '.join(passage)}\n\nWhat is the {attr} of {person}?"},
                      {"role": "assistant", "content": fact}])
    return convs


def knowledge_conversations(n: int, *, seed: int = 0) -> list[list[dict[str, str]]]:
    """Knowledge/instruction-only chats: reasoning-gym arithmetic and word tasks with their gold answers."""
    rg = require("reasoning_gym", "llm", pip="pip install reasoning-gym==0.1.25")
    tasks = [rg.create_dataset(name, size=n, seed=seed) for name in ("basic_arithmetic", "spell_backward")]
    rows = [task[i] for i in range(n) for task in tasks][:n]
    return [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": str(r["answer"])}]
            for r in rows]
