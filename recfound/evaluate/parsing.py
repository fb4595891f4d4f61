"""Turn generated text into the answer a metric scores; `None` means the output is invalid.

Parsers accept what an instruction-tuned model plausibly writes around a correct answer
("B", "(B)", "B. Running shoes", "Answer: B", "Yes, it is.") and nothing looser: an output
that names no option, or several different ones, is invalid and is reported as "#invalid".

`parse_option_authors` and `parse_attribute_values_authors` read outputs as the authors' scorer
does (JunkFood436/RecFound, scripts/eval.py), for the paper-comparable AVE and SA/PRP figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from recfound.evaluate.metrics import AttributeValue
from recfound.tasks import Task

_ANSWER_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*", re.IGNORECASE)
_AVE_KEYS = ("attribute", "value", "source")
# The answers the authors' scorer accepts for SA and PRP, whatever the row's options.
AUTHORS_OPTION_LETTERS = frozenset("ABCDE")


def parse_option(text: str, options: Sequence[str]) -> str | None:
    """The option label the output answers with, or None.

    Accepted: the output starts with a label, bare or wrapped in brackets/quotes and followed
    by its end or punctuation ("B", "(B) …", "B. …", "b"); or a cue like "answer is B" /
    "Option: B" names exactly one. Labels match case-insensitively and are returned as
    written in `options`.
    """
    if not options:
        raise ValueError("parse_option needs the row's options")
    by_key = {label.casefold(): label for label in options}
    alternatives = "|".join(re.escape(label) for label in sorted(options, key=len, reverse=True))
    # After the label: end, punctuation, a line break or " -"/" (" — not a space and a word, so
    # the article in "A great pick is C" is not read as option A.
    label_re = rf"[\(\[\"'*]*({alternatives})(?=$|[^\w\s]|\s*\n|\s+[-–(])"
    stripped = text.strip()
    start = re.match(label_re, stripped, re.IGNORECASE)
    if start:
        return by_key[start.group(1).casefold()]
    named = {
        by_key[m.group(1).casefold()]
        for cue in _ANSWER_CUE.finditer(stripped)
        if (m := re.match(label_re, stripped[cue.end() :], re.IGNORECASE))
    }
    return named.pop() if len(named) == 1 else None


def parse_yes_no(text: str, yes: str = "yes", no: str = "no") -> str | None:
    """`yes` or `no` when the output's first word is one of them, or only one of them occurs."""
    words = re.findall(r"[a-z]+", text.casefold())
    if not words:
        return None
    if words[0] in (yes, no):
        return words[0]
    present = {w for w in words if w in (yes, no)}
    return present.pop() if len(present) == 1 else None


def _first_json_array(text: str) -> object:
    """The first JSON array in `text` (models often wrap JSON in prose or code fences)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\[", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ValueError("no JSON array")


def parse_attribute_values(text: str) -> list[AttributeValue] | None:
    """AVE: a JSON list of {"attribute", "value", "source"} string objects, or None.

    `[]` is valid (the model extracts nothing). Any element that is not such an object makes
    the whole output invalid: a half-understood format is not credited.
    """
    try:
        value = _first_json_array(text)
    except ValueError:
        return None
    triples = []
    for element in value:
        if not isinstance(element, dict) or not all(
            isinstance(element.get(key), str) for key in _AVE_KEYS
        ):
            return None
        triples.append(AttributeValue(*(element[key] for key in _AVE_KEYS)))
    return triples


def parse_option_authors(text: str) -> str | None:
    """SA/PRP as the authors read an answer: the first character of the stripped output when
    it is one of A–E (case-sensitive), else None (invalid).

    Their inference generates one token for these tasks and scores `output.strip()[0]`; greedy
    decoding starts our longer answer with that same token, so its first character is theirs
    ("B. Running shoes" -> "B", but also "Based on …" -> "B"; "(B)" is invalid). The one
    difference: a whitespace-only first token, which their scorer cannot read (IndexError).
    """
    stripped = text.strip()
    return stripped[0] if stripped and stripped[0] in AUTHORS_OPTION_LETTERS else None


def parse_attribute_values_authors(text: str) -> list[Any] | None:
    """AVE as the authors read an answer: the whole output as JSON (`json.loads`, no prose or
    code fence around it). None (invalid, predicts nothing) when it is not JSON; a JSON value
    that is not a list predicts nothing but is valid, as in their scorer. The elements are
    returned as they are (recfound.evaluate.metrics.authors_attribute_value_counts judges them).
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # their bare `except:` catches any failure
        return None
    return value if isinstance(value, list) else []


def parse_text(text: str) -> str | None:
    """Free text (QR, UP, IP, AG): the stripped output; empty output is invalid."""
    stripped = text.strip()
    return stripped or None


def parse_output(task: Task, text: str, options: Sequence[str]) -> object | None:
    """Dispatch on the task's answer format (recfound.md §5); None = invalid output."""
    if task.code in ("SR", "SA", "PRP"):
        return parse_option(text, options)
    if task.code in ("AP", "PM"):
        return parse_yes_no(text)
    if task.code == "AVE":
        return parse_attribute_values(text)
    if task.code in ("QR", "UP", "IP", "AG"):
        return parse_text(text)
    raise ValueError(f"task {task.code} is not a generative task")


def parse_reference(task: Task, output: str, options: Sequence[str]) -> object:
    """The reference answer of a test row, parsed like predictions; bad references are errors.

    Raises ValueError naming the reason; the caller adds the row id.
    """
    parsed = parse_output(task, output, options)
    if parsed is None:
        raise ValueError(f"reference output {output!r} does not parse as a {task.code} answer")
    return parsed
