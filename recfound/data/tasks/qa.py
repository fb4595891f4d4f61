"""AP and AG from AmazonQA: a question with review snippets -> answerable? / the answer.

AP: yes when the snippets answer the question (`is_answerable`); labels interleaved per
split. AG: answerable questions only; the reference is the most helpful answer (most helpful
votes, the first on a tie). Questions stream by once; the lowest-ranked are kept (bounded) and
split by rank, so a question never crosses splits.
"""

from __future__ import annotations

from recfound.config import BuildConfig
from recfound.data.records import QARecord
from recfound.data.tasks.common import (
    NO,
    YES,
    BottomK,
    RowStream,
    SplitSizes,
    clip,
    fill_splits,
    interleave,
    make_row,
    rank,
)

SOURCE = "amazonqa"
AP_OPTIONS = (YES, NO)


class QATasks:
    """Keeps AP candidates per answerability and AG candidates (answerable, answered)."""

    def __init__(self, cfg: BuildConfig, sizes: SplitSizes) -> None:
        self.cfg = cfg
        self.sizes = sizes
        self._ap = {label: BottomK[QARecord](sizes.total) for label in (YES, NO)}
        self._ag = BottomK[QARecord](sizes.total)

    def observe(self, record: QARecord) -> None:
        self._ap[YES if record.is_answerable else NO].offer(
            rank(self.cfg.seed, "AP", record.asin, record.qid), record
        )
        if record.is_answerable and any(a.answer_text.strip() for a in record.answers):
            self._ag.offer(rank(self.cfg.seed, "AG", record.asin, record.qid), record)

    def _input(self, record: QARecord) -> str:
        snippets = "\n".join(
            f"- {clip(s, self.cfg.snippet_chars)}"
            for s in record.review_snippets[: self.cfg.qa_snippets]
        )
        return f"Question: {record.question_text}\nReviews:\n{snippets}"

    def _row(self, code: str, record: QARecord, output: str, **extra) -> dict:
        return make_row(
            code,
            (record.asin, record.qid),
            input=self._input(record),
            output=output,
            category=record.category,
            target_key=f"{record.asin}:{record.qid}",
            source=SOURCE,
            **extra,
        )

    def build_ap(self) -> RowStream:
        def make(split: str, record: QARecord) -> dict:
            output = YES if record.is_answerable else NO
            return self._row("AP", record, output, options=AP_OPTIONS)

        ranked = interleave({label: heap.ranked() for label, heap in self._ap.items()})
        return fill_splits(ranked, self.sizes, make)

    def build_ag(self) -> RowStream:
        def make(split: str, record: QARecord) -> dict:
            answers = [a for a in record.answers if a.answer_text.strip()]
            best = max(answers, key=lambda a: a.helpful[0])  # max keeps the first on a tie
            return self._row("AG", record, clip(best.answer_text, self.cfg.text_chars))

        return fill_splits(self._ag.ranked(), self.sizes, make)
