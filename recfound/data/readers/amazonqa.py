"""AmazonQA (`train-qar.jsonl`, `val-qar.jsonl`, `test-qar_all.jsonl`, ...): review-based QA.

One JSON object per line, UTF-8, optionally gzip-compressed. `is_answerable` is a boolean or
0/1 in the public files (both accepted); `qid` may be an integer (kept as decimal text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from recfound.data.readers.common import BadLines, Fields, iter_json_objects, parse_rows, quoted
from recfound.data.records import QAAnswer, QARecord


def _helpful(fields: Fields) -> tuple[int, int]:
    """`helpful`: [helpful votes, total votes]; absent or null gives (0, 0)."""
    return fields.integer_pair("helpful") or (0, 0)


def _answers(fields: Fields) -> tuple[QAAnswer, ...]:
    """`answers`: a list of {answerText, answerType, helpful}; absent or null gives ()."""
    value = fields.raw("answers", required=False)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fields.error(f"field 'answers' must be a list, got {quoted(value)}")
    answers = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise fields.error(f"field 'answers[{index}]' must be an object, got {quoted(raw)}")
        answer = fields.nested(f"answers[{index}]", raw)
        answers.append(
            QAAnswer(
                answer_text=answer.text("answerText"),
                answer_type=answer.optional_text("answerType"),
                helpful=_helpful(answer),
            )
        )
    return tuple(answers)


def _answerable(fields: Fields) -> bool:
    """`is_answerable`: true/false, or the integers 0/1 some public files use."""
    value = fields.raw("is_answerable")
    if isinstance(value, int) and value in (0, 1):  # bool is an int too: True == 1
        return bool(value)
    raise fields.error(
        f"field 'is_answerable' must be true/false or 0/1, got {type(value).__name__} "
        f"{quoted(value)}"
    )


def _question(fields: Fields) -> QARecord:
    return QARecord(
        qid=fields.ident("qid"),
        question_text=fields.text("questionText"),
        question_type=fields.text("questionType"),
        asin=fields.ident("asin"),
        category=fields.text("category"),
        review_snippets=fields.text_list("review_snippets", required=True),
        answers=_answers(fields),
        is_answerable=_answerable(fields),
    )


def read_amazonqa(path: str | Path) -> Iterator[QARecord]:
    """Stream one AmazonQA JSON Lines file, one QARecord per question."""
    path = Path(path)
    bad = BadLines(path)
    yield from parse_rows(iter_json_objects(path, bad), _question, bad)
