"""The instruction of each task, as stored in the unified dataset's `instruction` column.

Embedding tasks: the query-side instruction (GritLM style), excluded from the pooled vector;
passages carry none. Generative tasks: what to produce and in which form, so that an answer
can be parsed (a letter, yes/no, JSON).
"""

from __future__ import annotations

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
