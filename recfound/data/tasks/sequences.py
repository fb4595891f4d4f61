"""U2I, SR and UP: tasks on a user's time-ordered behaviour, split leave-last-out.

For a user with n interactions: the test row predicts interaction n (the latest), the
validation row interaction n-1 from the n-2 before it, and training rows predict an earlier
interaction k (1 <= k <= n-3 in 0-based positions) from the ones before it. A training row
whose target (user, item) is also a held-out target (a repeat purchase) is dropped, so no test
target is ever a training target. The history shown is the last `max_history` interactions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from recfound.config import BuildConfig
from recfound.data.tasks.catalog import Catalog, ItemInfo
from recfound.data.tasks.common import LETTERS, RowStream, SplitSizes, make_row, rank, rng_for
from recfound.data.tasks.interactions import Sequences, UserSequence

# Held-out positions counted from the end: test = the last interaction, validation = the one
# before; training targets start one further back.
HELD_OUT = {"test": 1, "validation": 2}
FIRST_TRAIN_FROM_END = 3
# Profile (UP): how many top topics and brands it names.
PROFILE_TOP = 2

RowMaker = Callable[[str, UserSequence, int], dict | None]
# Sees each row yielded, with the sequence and position it predicts: (code, row, seq, k).
RowObserver = Callable[[str, dict, UserSequence, int], None]


# How an SR input lays out its parts: SR_HISTORY + history + SR_CANDIDATES + lettered titles.
SR_HISTORY = "History:\n"
SR_CANDIDATES = "\nCandidates:\n"


def sr_history(input: str) -> str | None:
    """The history part of an SR input (the text a U2I query of the same user holds), or None
    when `input` is not laid out as SR inputs are."""
    if not input.startswith(SR_HISTORY) or SR_CANDIDATES not in input:
        return None
    return input[len(SR_HISTORY) : input.rindex(SR_CANDIDATES)]


def history_input(items: Sequence[str], end: int, limit: int, title: Callable[[str], str]) -> str:
    """A behaviour history as U2I queries and SR prompts show it: the titles of the last
    `limit` items before position `end`, numbered oldest first. `recfound recommend --user`
    renders a user's query with it, so a recommendation asks what a U2I row asks."""
    return _numbered([title(item) for item in items[max(0, end - limit) : end]])


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _top(counts: Counter[str], n: int) -> list[str]:
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def user_profile(infos: list[ItemInfo], ratings: list[float]) -> str:
    """A profile summarising a history: top topics, top brands, price range, mean rating.

    Derived from the items shown, so the model can produce it from its input; clauses whose
    data the source lacks (no store, no price) are left out.
    """
    topics = _top(Counter(topic for info in infos for topic in info.topics), PROFILE_TOP)
    clauses = [f"Interested mostly in {_join(topics)}"]
    brands = _top(Counter(i.store for i in infos if i.store), PROFILE_TOP)
    if brands:
        clauses.append(f"favourite brands: {_join(brands)}")
    prices = [i.price for i in infos if i.price is not None]
    if prices:
        low, high = min(prices), max(prices)
        clauses.append(
            f"pays about ${low:.0f}"
            if round(low) == round(high)
            else f"pays ${low:.0f} to ${high:.0f}"
        )
    clauses.append(f"average rating {sum(ratings) / len(ratings):.1f} of 5")
    return "; ".join(clauses) + "."


class SequenceTasks:
    """Builds the rows of U2I, SR and UP from the same sequences and catalogue."""

    def __init__(
        self,
        seqs: Sequences,
        catalog: Catalog,
        cfg: BuildConfig,
        observers: Iterable[RowObserver] = (),
    ) -> None:
        self.seqs = seqs
        self.catalog = catalog
        self.cfg = cfg
        self.observers = tuple(observers)
        self.eligible = {u: n for u, n in seqs.lengths().items() if n >= cfg.min_interactions}

    def build(self) -> dict[str, RowStream]:
        makers = {"U2I": self._u2i, "SR": self._sr, "UP": self._up}
        return {
            code: self._leave_last_out(code, SplitSizes.of(self.cfg, code), make)
            for code, make in makers.items()
        }

    def _leave_last_out(self, code: str, sizes: SplitSizes, make: RowMaker) -> RowStream:
        """(split, row) of task `code`: test, then validation (held-out positions), then train."""
        seed = self.cfg.seed
        order = sorted(self.eligible, key=lambda user: (rank(seed, code, user), user))
        held_out: set[str] = set()
        for split, from_end in HELD_OUT.items():
            filled = 0
            for user in order:
                if sizes.full(split, filled):
                    break
                seq = self.seqs.get(user)
                row = make(split, seq, len(seq) - from_end)
                if row is not None:
                    filled += 1
                    held_out.add(row["target_key"])
                    yield self._observed(code, split, row, seq, len(seq) - from_end)
        if sizes.train is None:
            yield from self._all_training_rows(code, order, held_out, make)
            return
        # Capped: pass p takes the p-th of each user's (seeded) shuffled earlier positions, so
        # the cap spreads over users; positions are drawn only for the users a pass reaches.
        positions: dict[str, list[int]] = {}
        depth, reached, filled = 0, True, 0
        while reached:
            reached = False
            for user in order:
                if sizes.full("train", filled):
                    return
                if user not in positions:
                    positions[user] = self._training_positions(code, user)
                if depth < len(positions[user]):
                    reached = True
                    seq, k = self.seqs.get(user), positions[user][depth]
                    row = make("train", seq, k)
                    if row is not None and row["target_key"] not in held_out:
                        filled += 1
                        yield self._observed(code, "train", row, seq, k)
            depth += 1

    def _training_positions(self, code: str, user: str) -> list[int]:
        """The user's positions a training row may predict, in a seeded order."""
        earlier = range(1, self.eligible[user] - FIRST_TRAIN_FROM_END + 1)
        return rng_for(self.cfg.seed, code, "positions", user).sample(earlier, len(earlier))

    def _all_training_rows(
        self, code: str, order: list[str], held_out: set[str], make: RowMaker
    ) -> RowStream:
        """Uncapped: every training position of every user, one user at a time (each user's
        sequence is materialised once, not once per position)."""
        for user in order:
            seq = self.seqs.get(user)
            for k in self._training_positions(code, user):
                row = make("train", seq, k)
                if row is not None and row["target_key"] not in held_out:
                    yield self._observed(code, "train", row, seq, k)

    def _observed(
        self, code: str, split: str, row: dict, seq: UserSequence, k: int
    ) -> tuple[str, dict]:
        """(split, row), once every observer has seen the row about to be yielded."""
        for observe in self.observers:
            observe(code, row, seq, k)
        return split, row

    def _negatives(self, code: str, seq: UserSequence, k: int, n: int) -> list[str] | None:
        """`n` items of the target's category the user never interacted with."""
        category = self.catalog[seq.items[k]].category
        rng = rng_for(self.cfg.seed, code, "negatives", seq.user_id, k)
        return self.catalog.pools.sample(category, n, seq.item_set, rng)

    def _keys(self, seq: UserSequence, k: int) -> tuple:
        return (seq.source, seq.user_id, seq.items[k], seq.timestamps[k])

    def _title(self, item_id: str) -> str:
        return self.catalog[item_id].title

    def _u2i(self, split: str, seq: UserSequence, k: int) -> dict | None:
        cfg = self.cfg
        wanted = cfg.hard_negatives if split == "train" else cfg.eval_negatives
        negatives = self._negatives("U2I", seq, k, wanted)
        if negatives is None:
            return None
        target = seq.items[k]
        return make_row(
            "U2I",
            self._keys(seq, k),
            input=history_input(seq.items, k, cfg.max_history, self._title),
            positives=[self.catalog.passage(target)],
            positive_ids=[target],
            negatives=[self.catalog.passage(i) for i in negatives],
            negative_ids=negatives,
            category=self.catalog[target].category,
            user_id=seq.user_id,
            target_key=f"{seq.user_id}:{target}",
            source=seq.source,
        )

    def _sr(self, split: str, seq: UserSequence, k: int) -> dict | None:
        cfg = self.cfg
        negatives = self._negatives("SR", seq, k, cfg.sr_candidates - 1)
        if negatives is None:
            return None
        target = seq.items[k]
        answer = rng_for(cfg.seed, "SR", "letter", seq.user_id, k).randrange(cfg.sr_candidates)
        candidates = [*negatives[:answer], target, *negatives[answer:]]
        letters = LETTERS[: cfg.sr_candidates]
        listed = "\n".join(
            f"{letters[i]}. {self.catalog[c].title}" for i, c in enumerate(candidates)
        )
        history = history_input(seq.items, k, cfg.max_history, self._title)
        return make_row(
            "SR",
            self._keys(seq, k),
            input=f"{SR_HISTORY}{history}{SR_CANDIDATES}{listed}",
            output=letters[answer],
            options=list(letters),
            option_ids=candidates,
            category=self.catalog[target].category,
            user_id=seq.user_id,
            target_key=f"{seq.user_id}:{target}",
            source=seq.source,
        )

    def _up(self, split: str, seq: UserSequence, k: int) -> dict | None:
        start = max(0, k + 1 - self.cfg.max_history)
        items, ratings = seq.items[start : k + 1], seq.ratings[start : k + 1]
        infos = [self.catalog[i] for i in items]
        lines = [f"{info.title} (rated {r:g})" for info, r in zip(infos, ratings, strict=True)]
        return make_row(
            "UP",
            self._keys(seq, k),
            input=_numbered(lines),
            output=user_profile(infos, list(ratings)),
            category=_top(Counter(info.category for info in infos), 1)[0],
            user_id=seq.user_id,
            target_key=f"{seq.user_id}@{seq.timestamps[k]}",
            source=seq.source,
        )
