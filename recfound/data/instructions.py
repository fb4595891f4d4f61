"""The instruction of each task, as stored in the unified dataset's `instruction` column.

Embedding tasks: the query-side instruction (GritLM style), excluded from the pooled vector;
passages carry none. Generative tasks: what to produce and in which form, so that an answer
can be parsed (a letter, yes/no, JSON).
"""

from __future__ import annotations

from collections.abc import Mapping

INSTRUCTIONS: dict[str, str] = {
    "U2I": "Given a user's purchase history, retrieve the item the user will buy next.",
    "Q2I": "Given a shopping query, retrieve the product that matches it exactly.",
    "I2I": "Given a product, retrieve products that are bought together with it.",
    "QR": "Rewrite the shopping query so that it is spelled and worded like the catalogue. "
    "Answer with the rewritten query only.",
    "SR": "Given the user's history, which candidate will the user buy next? "
    "Answer with the candidate's letter only.",
    "PRP": "How is product 2 related to product 1? Answer with the option's letter only.",
    "SA": "How many stars does the review give? Answer with the option's letter only.",
    "AVE": "Extract the product's attributes whose values appear in its text. Answer with a "
    'JSON list of {"attribute", "value", "source"} objects; source is the field the value '
    "appears in (title, features or description).",
    "PM": "Do the two listings describe the same product? Answer yes or no.",
    "UP": "Summarise the user's interests from their history: categories, brands, price "
    "range and average rating.",
    "IP": "Write a short profile of the product from its information.",
    "AP": "Can the question be answered from the reviews? Answer yes or no.",
    "AG": "Answer the question using the reviews.",
}

# Where a source's domain is not shopping, its rows name what its users did: a MovieLens
# history was watched and rated, not purchased. (task code, source) -> instruction.
DOMAIN_INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("U2I", "movielens"): "Given the movies a user watched and rated, retrieve the movie the "
    "user will watch next.",
    ("SR", "movielens"): "Given the movies the user watched, which candidate will the user "
    "watch next? Answer with the candidate's letter only.",
    ("UP", "movielens"): "Summarise the user's taste from the movies they watched and rated: "
    "favourite genres and average rating.",
}


def instruction_for(code: str, source: str) -> str:
    """The instruction of task `code` for rows of `source` (its domain's wording if it has one)."""
    return DOMAIN_INSTRUCTIONS.get((code, source), INSTRUCTIONS[code])


def trained_instructions(rows: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, str]:
    """The instruction each task was trained with: that of the source with most training rows.

    `rows` is build.json's `rows` (task -> source -> split -> count). A task fed by several
    sources trains under each one's wording; inference without an instruction takes the most
    frequent (ties: the first source by name), so the model is asked as it mostly learned.
    """
    trained = {}
    for code, sources in rows.items():
        source = max(sorted(sources), key=lambda name: sources[name].get("train", 0))
        trained[code] = instruction_for(code, source)
    return trained


def default_instruction(code: str, trained: Mapping[str, str]) -> str:
    """The instruction for a request of task `code` that brings none: the trained one (from
    `trained_instructions` of the model's build), else the task's standard wording."""
    return trained.get(code) or INSTRUCTIONS.get(code, "")
