"""The raw readers: they stream the public formats into typed records and fail with located errors.

Every error test asserts the DataError names the file, the line (or parquet row) and the reason.
A test of the real MovieLens copy in ../shared/realdata skips when it is absent (never in the repo).
"""

from __future__ import annotations

import gzip
import json
import shutil
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from recfound.config import BuildConfig
from recfound.data import gx_suites
from recfound.data.gx_frames import raw_batches
from recfound.data.readers import (
    NOTE_READ_AS_UTF8,
    NOTE_UNNAMED_VALUES,
    BadLinesError,
    LineTooLongError,
    common,
    discover_sources,
    line_limit,
    read_amazonqa,
    read_esci,
    read_item_meta,
    read_item_meta_2018,
    read_match_pairs,
    read_match_products,
    read_movie_tags,
    read_movie_users,
    read_movies,
    read_ratings,
    read_reviews,
    read_reviews_2018,
    refuse_copies,
)
from recfound.data.readers.amazon_reviews_2018 import NOTE_NOT_A_PRICE, NOTE_UNTITLED
from recfound.data.records import QAAnswer
from recfound.errors import DataError

REVIEW = {
    "rating": 4.0,
    "title": "Works well",
    "text": "Cleans gently.",
    "images": [],
    "asin": "B01",
    "parent_asin": "P01",
    "user_id": "U1",
    "timestamp": 1588687728923,
    "helpful_vote": 2,
    "verified_purchase": True,
}
META = {
    "main_category": "All Beauty",
    "title": "Gentle soap",
    "average_rating": 4.2,
    "rating_number": 17,
    "features": ["unscented"],
    "description": ["A soap."],
    "price": 12.5,
    "images": [],
    "videos": [],
    "store": "SoapCo",
    "categories": [],
    "details": {"Item Weight": "1 pound", "Best Sellers Rank": {"Beauty": 5}},
    "parent_asin": "P01",
    "bought_together": None,
}
QA = {
    "qid": 7,
    "questionText": "Is it waterproof?",
    "questionType": "yesno",
    "review_snippets": ["It survived the rain."],
    "answers": [{"answerText": "Yes.", "answerType": "Y", "helpful": [3, 4]}],
    "is_answerable": 1,
    "asin": "B02",
    "category": "Electronics",
}


def write_jsonl(path: Path, objects: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(obj) + "\n" for obj in objects).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


def with_field(record: dict, **changes: object) -> dict:
    return {**record, **changes}


def without_field(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


def assert_located(err: DataError, path: Path, line: int | None, reason: str) -> None:
    """The error names the file, the line/row and (a part of) the reason."""
    assert err.path == path
    assert err.line == line
    assert reason in err.reason
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err).startswith(where)


# --- Amazon Reviews 2023 -------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["jsonl", "jsonl.gz"])
def test_reviews_are_read_from_plain_and_gzip_jsonl(tmp_path: Path, compress: bool) -> None:
    second = with_field(REVIEW, user_id="U2", helpful_vote=None, verified_purchase=None)
    path = write_jsonl(tmp_path / "All_Beauty.jsonl", [REVIEW, second], compress)
    first, other = read_reviews(path)
    assert first.rating == 4.0 and first.user_id == "U1" and first.parent_asin == "P01"
    assert first.timestamp == 1588687728923 and first.helpful_vote == 2
    assert first.verified_purchase is True
    assert (other.helpful_vote, other.verified_purchase) == (0, False)


def test_reviews_stream_records_before_a_later_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(REVIEW) + "\n" + "{not json\n")
    records = read_reviews(path)
    assert next(records).user_id == "U1"
    with pytest.raises(DataError) as info:
        next(records)
    assert_located(info.value, path, 2, "malformed JSON")


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(REVIEW) + "\n\n" + '{"rating": 5,\n')
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 3, "malformed JSON")


def test_missing_required_field_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [REVIEW, without_field(REVIEW, "user_id")])
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 2, "required field 'user_id' is missing")


def test_null_required_field_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [with_field(REVIEW, timestamp=None)])
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 1, "required field 'timestamp' is null")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rating", "five", "field 'rating' must be a number, got str 'five'"),
        ("rating", True, "field 'rating' must be a number"),
        ("timestamp", 1.5e12, "field 'timestamp' must be an integer"),
        ("text", ["a"], "field 'text' must be a string"),
        ("user_id", "  ", "required field 'user_id' is blank"),
    ],
)
def test_wrong_type_is_an_error(tmp_path: Path, field: str, value: object, reason: str) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [REVIEW, REVIEW, with_field(REVIEW, **{field: value})])
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 3, reason)


@pytest.mark.parametrize("content", [b"", b"\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_jsonl_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert info.value.path == path
    assert "empty" in info.value.reason or "no records" in info.value.reason


def test_empty_gzip_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="file is empty"):
        list(read_reviews(path))


def test_non_utf8_bytes_name_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    bad = json.dumps(with_field(REVIEW, text="caf_")).encode().replace(b"caf_", b"caf\xe9")
    path.write_bytes(json.dumps(REVIEW).encode() + b"\n" + bad + b"\n")
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 2, "not valid UTF-8: byte 0xe9")


def test_truncated_gzip_names_the_line_where_reading_stopped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    records = [with_field(REVIEW, user_id=f"U{i}", text="x" * 200) for i in range(400)]
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    path.write_bytes(whole[: len(whole) // 2])
    read = []
    with pytest.raises(DataError) as info:
        read.extend(read_reviews(path))
    assert 0 < len(read) < len(records)
    assert_located(info.value, path, len(read) + 1, "gzip stream is truncated or corrupt")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        list(read_reviews(tmp_path / "absent.jsonl"))
    assert_located(info.value, tmp_path / "absent.jsonl", None, "file not found")


def test_item_meta_coerces_price_and_keeps_details_as_text(tmp_path: Path) -> None:
    rows = [
        META,
        with_field(META, price="None", main_category=None, store=None, details=None),
        with_field(META, price="$1,299.99", average_rating=None, rating_number=None),
        with_field(META, price=None, bought_together=["P02"]),
    ]
    path = write_jsonl(tmp_path / "meta_All_Beauty.jsonl.gz", rows, compress=True)
    items = list(read_item_meta(path))
    assert [i.price for i in items] == [12.5, None, 1299.99, None]
    first = items[0]
    assert first.features == ("unscented",) and first.description == ("A soap.",)
    assert first.details == {"Item Weight": "1 pound", "Best Sellers Rank": '{"Beauty": 5}'}
    assert (first.average_rating, first.rating_number) == (4.2, 17)
    assert (items[1].main_category, items[1].store, items[1].details) == ("", "", {})
    assert items[2].average_rating is None and items[2].rating_number is None
    assert items[3].bought_together == ("P02",)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("price", "about ten dollars", "field 'price' must be a price"),
        ("features", "unscented", "field 'features' must be a list of strings"),
        ("features", ["ok", 3], "field 'features[1]' must be a string"),
        ("details", ["a"], "field 'details' must be an object"),
    ],
)
def test_item_meta_rejects_wrong_types(
    tmp_path: Path, field: str, value: object, reason: str
) -> None:
    path = write_jsonl(tmp_path / "meta_X.jsonl", [with_field(META, **{field: value})])
    with pytest.raises(DataError) as info:
        list(read_item_meta(path))
    assert_located(info.value, path, 1, reason)


# --- Amazon Reviews 2014 / 2018 --------------------------------------------------------------

REVIEW_2018 = {
    "overall": 5.0,
    "vote": "1,234",
    "verified": True,
    "reviewTime": "09 13, 2009",
    "reviewerID": "A1",
    "asin": "0001",
    "style": {"Format:": " Hardcover"},
    "reviewerName": "Ann",
    "reviewText": "Loved it.",
    "summary": "Five stars",
    "unixReviewTime": 1252800000,
}
REVIEW_2014 = {
    "reviewerID": "A2",
    "asin": "0002",
    "reviewerName": "Bo",
    "helpful": [2, 3],
    "reviewText": "Fine.",
    "overall": 3.0,
    "summary": "OK",
    "unixReviewTime": 1385769600,
    "reviewTime": "11 30, 2013",
}
META_2018 = {
    "category": ["Books", "Literature & Fiction"],
    "tech1": {"Format": "Paperback", "ASIN:": "ignored: details wins"},
    "description": ["A novel."],
    "title": "A Book",
    "also_buy": ["0003", "0004"],
    "also_view": ["0005"],
    "brand": "Penguin",
    "feature": ["Paperback"],
    "rank": "12 in Books (",
    "main_cat": "Books",
    "price": "$12.99",
    "asin": "0001",
    "details": {"\n    ASIN: \n    ": "0001", "Publisher:": "Penguin"},
}
# A 2014 metadata line as the public files write it: a Python dict literal, not JSON.
META_2014_LINE = (
    "{'asin': '0002', 'salesRank': {'Books': 5}, 'imUrl': 'http://x/y.jpg', "
    "'categories': [['Books', 'Mystery'], ['Kindle Store']], 'title': \"Bo's Book\", "
    "'description': 'A mystery.', 'price': 7.5, 'brand': 'Acme', "
    "'related': {'also_bought': ['0007', '0006'], 'bought_together': ['0006']}}"
)


def test_reviews_2018_and_2014_map_onto_review(tmp_path: Path) -> None:
    image_only = without_field(without_field(REVIEW_2018, "reviewText"), "summary")
    path = write_jsonl(tmp_path / "Books_5.json.gz", [REVIEW_2018, REVIEW_2014, image_only], True)
    new, old, bare = read_reviews_2018(path)
    assert (new.user_id, new.asin, new.parent_asin, new.rating) == ("A1", "0001", "0001", 5.0)
    assert (new.title, new.text) == ("Five stars", "Loved it.")
    assert new.timestamp == 1252800000 * 1000  # seconds in the file, milliseconds in Review
    assert (new.helpful_vote, new.verified_purchase) == (1234, True)
    assert (old.helpful_vote, old.verified_purchase) == (2, False)
    assert (bare.title, bare.text) == ("", "")


def test_read_reviews_tells_the_release_by_the_file_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "reviews_Books_5.json", [REVIEW_2014])
    assert [r.user_id for r in read_reviews(path)] == ["A2"]
    meta = tmp_path / "meta_Books.json"
    meta.write_text(META_2014_LINE + "\n")
    assert [m.parent_asin for m in read_item_meta(meta)] == ["0002"]


def test_item_meta_2018_maps_onto_item_meta(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "meta_Books.json", [META_2018])
    (item,) = read_item_meta_2018(path)
    assert (item.parent_asin, item.title, item.main_category) == ("0001", "A Book", "Books")
    assert item.categories == ("Books", "Literature & Fiction")
    assert (item.store, item.price, item.features) == ("Penguin", 12.99, ("Paperback",))
    assert item.description == ("A novel.",)
    assert item.bought_together == ("0003", "0004")  # also_view is not "bought"
    assert item.details == {"ASIN": "0001", "Publisher": "Penguin", "Format": "Paperback"}
    assert (item.average_rating, item.rating_number) == (None, None)


def test_item_meta_2014_python_literals_are_read_without_eval(tmp_path: Path) -> None:
    path = tmp_path / "meta_Books.json.gz"
    path.write_bytes(gzip.compress((META_2014_LINE + "\n").encode()))
    (item,) = read_item_meta_2018(path)
    assert (item.parent_asin, item.title, item.store, item.price) == (
        "0002",
        "Bo's Book",
        "Acme",
        7.5,
    )
    assert item.categories == ("Books", "Mystery")  # the first category path
    assert item.description == ("A mystery.",)
    assert item.bought_together == ("0006", "0007")  # bought_together first, no repeats


def test_item_meta_2018_counts_untitled_items_and_prices_that_are_no_price(
    tmp_path: Path,
) -> None:
    rows = [
        without_field(META_2018, "title"),
        with_field(META_2018, asin="0002", price=".a-box-inner{background-color:#fff}"),
        with_field(META_2018, asin="0003", price="$3.99 - $24.99"),
        with_field(META_2018, asin="0004", price=""),
    ]
    path = write_jsonl(tmp_path / "meta_Books.json", rows)
    notes: Counter[str] = Counter()
    items = list(read_item_meta_2018(path, notes=notes))
    assert [i.title for i in items] == ["", "A Book", "A Book", "A Book"]
    assert [i.price for i in items] == [12.99, None, None, None]
    assert notes == {NOTE_UNTITLED: 1, NOTE_NOT_A_PRICE: 2}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("__import__('os').system('true')", "neither JSON"),
        ("{'asin': '1', 'title': open('x')}", "nor a Python literal"),
        ("['not', 'a', 'dict']", "expected a JSON object, got list"),
    ],
)
def test_item_meta_2014_line_that_is_no_dict_literal_is_an_error(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "meta_Books.json"
    path.write_text(META_2014_LINE + "\n" + line + "\n")
    with pytest.raises(DataError) as info:
        list(read_item_meta_2018(path))
    assert_located(info.value, path, 2, reason)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"overall": 0.0}, "field 'overall' must be from 1 to 5, got 0.0"),
        ({"vote": "many"}, "field 'vote' must be an integer, got str 'many'"),
        ({"reviewerID": None}, "required field 'reviewerID' is null"),
    ],
)
def test_reviews_2018_reject_bad_fields(tmp_path: Path, change: dict, reason: str) -> None:
    path = write_jsonl(tmp_path / "Books.json", [REVIEW_2018, with_field(REVIEW_2018, **change)])
    with pytest.raises(DataError) as info:
        list(read_reviews_2018(path))
    assert_located(info.value, path, 2, reason)


# --- AmazonQA --------------------------------------------------------------------------------


def test_amazonqa_reads_answers_and_accepts_0_1_answerability(tmp_path: Path) -> None:
    rows = [QA, with_field(QA, qid="q-2", is_answerable=False, answers=[])]
    path = write_jsonl(tmp_path / "train-qar.jsonl", rows)
    first, second = read_amazonqa(path)
    assert first.qid == "7" and first.question_type == "yesno" and first.is_answerable is True
    assert first.answers == (QAAnswer(answer_text="Yes.", answer_type="Y", helpful=(3, 4)),)
    assert first.review_snippets == ("It survived the rain.",)
    assert (second.qid, second.is_answerable, second.answers) == ("q-2", False, ())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"is_answerable": "yes"}, "field 'is_answerable' must be true/false or 0/1"),
        ({"is_answerable": 2}, "field 'is_answerable' must be true/false or 0/1"),
        ({"is_answerable": None}, "required field 'is_answerable' is null"),
        ({"answers": [{"answerType": "Y"}]}, "required field 'answers[0].answerText' is missing"),
        ({"answers": [{"answerText": "a", "helpful": [1]}]}, "'answers[0].helpful' must be"),
        ({"review_snippets": None}, "required field 'review_snippets' is null"),
    ],
)
def test_amazonqa_rejects_bad_fields(tmp_path: Path, change: dict, reason: str) -> None:
    path = write_jsonl(tmp_path / "val-qar.jsonl", [QA, with_field(QA, **change)])
    with pytest.raises(DataError) as info:
        list(read_amazonqa(path))
    assert_located(info.value, path, 2, reason)


# --- ESCI ------------------------------------------------------------------------------------


def write_esci(tmp_path: Path, examples: dict | None = None, products: dict | None = None):
    examples = examples or {
        "example_id": [10, 11, 12],
        "query": ["red shoe", "red shoe", "zapato"],
        "query_id": [1, 1, 2],
        "product_id": ["A", "B", "A"],
        "product_locale": ["us", "us", "es"],
        "esci_label": ["E", "I", "S"],
        "small_version": [1, 1, 0],
        "large_version": [1, 1, 1],
        "split": ["train", "train", "test"],
    }
    products = products or {
        "product_id": ["A", "B", "A", "UNUSED"],
        "product_title": ["Red shoe", "Blue hat", "Zapato rojo", None],
        "product_description": [None, "A hat", None, None],
        "product_bullet_point": ["Leather", None, None, None],
        "product_brand": ["Acme", None, None, None],
        "product_color": ["red", None, None, None],
        "product_locale": ["us", "us", "es", "us"],
    }
    ex_path = tmp_path / "shopping_queries_dataset_examples.parquet"
    pr_path = tmp_path / "shopping_queries_dataset_products.parquet"
    pq.write_table(pa.table(examples), ex_path)
    pq.write_table(pa.table(products), pr_path)
    return ex_path, pr_path


def test_esci_joins_examples_with_products_on_id_and_locale(tmp_path: Path) -> None:
    # The products file also holds an unreferenced row with a null title: it is skipped,
    # not kept or checked, because only referenced products are read into memory.
    ex_path, pr_path = write_esci(tmp_path)
    rows = list(read_esci(ex_path, pr_path))
    assert [r.example_id for r in rows] == [10, 11, 12]
    assert [r.product_title for r in rows] == ["Red shoe", "Blue hat", "Zapato rojo"]
    first = rows[0]
    assert (first.query, first.query_id, first.esci_label, first.split) == (
        "red shoe",
        1,
        "E",
        "train",
    )
    assert (first.product_bullet_point, first.product_brand, first.product_description) == (
        "Leather",
        "Acme",
        "",
    )


def test_esci_missing_product_names_the_example_row(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(
        tmp_path,
        products={
            "product_id": ["A", "B"],
            "product_title": ["Red shoe", "Blue hat"],
            "product_description": [None, None],
            "product_bullet_point": [None, None],
            "product_brand": [None, None],
            "product_color": [None, None],
            "product_locale": ["us", "us"],
        },
    )
    records = read_esci(ex_path, pr_path)
    with pytest.raises(DataError) as info:
        next(records)  # fails before yielding anything: the join is checked up front
    assert_located(info.value, ex_path, 3, "product A (es) is not in")


def test_parquet_missing_column_is_an_error(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(tmp_path)
    table = pq.read_table(pr_path).drop_columns(["product_title"])
    pq.write_table(table, pr_path)
    with pytest.raises(DataError) as info:
        list(read_esci(ex_path, pr_path))
    assert_located(info.value, pr_path, None, "missing column(s) product_title")


def test_parquet_column_of_wrong_type_is_an_error(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(tmp_path)
    table = pq.read_table(ex_path)
    query_ids = pa.array([str(v) for v in table["query_id"].to_pylist()])
    table = table.set_column(table.schema.get_field_index("query_id"), "query_id", query_ids)
    pq.write_table(table, ex_path)
    with pytest.raises(DataError) as info:
        list(read_esci(ex_path, pr_path))
    assert_located(info.value, ex_path, None, "column query_id has type string, expected int")


def test_esci_bad_label_names_the_row(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(tmp_path)
    table = pq.read_table(ex_path)
    labels = pa.array(["E", "X", "S"])
    pq.write_table(
        table.set_column(table.schema.get_field_index("esci_label"), "esci_label", labels), ex_path
    )
    with pytest.raises(DataError) as info:
        list(read_esci(ex_path, pr_path))
    assert_located(info.value, ex_path, 2, "esci_label must be one of E, S, C, I")


def test_parquet_without_rows_is_an_error(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(tmp_path)
    pq.write_table(pq.read_table(ex_path).slice(0, 0), ex_path)
    with pytest.raises(DataError) as info:
        list(read_esci(ex_path, pr_path))
    assert_located(info.value, ex_path, None, "no rows")


# --- MovieLens -------------------------------------------------------------------------------


def test_ml100k_files_are_read_with_latin1_titles_and_genre_flags(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    flags[5] = flags[8] = "1"  # Comedy, Drama
    item = "|".join(["1", "Misérables, Les (1995)", "01-Jan-1995", "", "http://x", *flags])
    (tmp_path / "u.item").write_bytes((item + "\n").encode("iso-8859-1"))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    ratings = list(read_ratings(tmp_path / "u.data"))
    assert [(r.user_id, r.item_id, r.rating, r.timestamp) for r in ratings] == [
        ("196", "242", 3.0, 881250949),
        ("186", "302", 3.0, 891717742),
    ]
    (movie,) = read_movies(tmp_path / "u.item")
    assert movie.title == "Misérables, Les (1995)" and movie.genres == ("Comedy", "Drama")
    (user,) = read_movie_users(tmp_path / "u.user")
    assert (user.user_id, user.age, user.gender, user.occupation, user.zip_code) == (
        "1",
        24,
        "M",
        "technician",
        "85711",
    )


def test_ml1m_files_are_read_with_occupation_names(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café (1999)::Drama\n".encode(
            "iso-8859-1"
        )
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n")
    (rating,) = read_ratings(tmp_path / "ratings.dat")
    assert (rating.user_id, rating.item_id, rating.rating) == ("1", "1193", 5.0)
    toy, cafe = read_movies(tmp_path / "movies.dat")
    assert toy.genres == ("Animation", "Children's", "Comedy") and cafe.title == "Café (1999)"
    (user,) = read_movie_users(tmp_path / "users.dat")
    assert (user.gender, user.age, user.occupation) == ("F", 1, "K-12 student")


def test_movielens_line_with_wrong_field_count_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\n")
    with pytest.raises(DataError) as info:
        list(read_ratings(path))
    assert_located(info.value, path, 2, "expected 4 fields separated by '\\t', found 3")


def test_movielens_non_numeric_rating_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::five::978300760\n")
    with pytest.raises(DataError) as info:
        list(read_ratings(path))
    assert_located(info.value, path, 1, "field 'rating' must be a number, got str 'five'")


def test_movielens_unknown_occupation_code_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "users.dat"
    path.write_text("1::F::1::10::48067\n2::M::56::21::70072\n")
    with pytest.raises(DataError) as info:
        list(read_movie_users(path))
    assert_located(info.value, path, 2, "occupation code must be 0..20, got 21")


def test_movielens_variant_comes_from_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "ratings.txt"
    path.write_text("1,2,3,4\n")
    with pytest.raises(DataError) as info:
        list(read_ratings(path))
    assert_located(info.value, path, None, "expected u.data, ratings.dat or ratings.csv")


def test_empty_movielens_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "u.user"
    path.write_text("")
    with pytest.raises(DataError) as info:
        list(read_movie_users(path))
    assert_located(info.value, path, None, "file is empty")


# --- MovieLens CSV sets (ml-latest, ml-latest-small, ml-20m, ml-25m) ------------------------


def write_ml_csv(folder: Path) -> Path:
    """A small ml-latest-small-like set, with the quirks of the public files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_bytes(
        b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3,1260759179\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "83829,Scorpio Rising (1964),(no genres listed)\n"
        '73,"Misérables, Les (1995)",Drama|War\n',
        encoding="utf-8",
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n15,339,\"sandra 'boring' bullock\",1138537770\n"
    )
    return folder


def test_movielens_csv_files_are_read_with_quoted_titles_genres_and_half_stars(
    tmp_path: Path,
) -> None:
    folder = write_ml_csv(tmp_path / "ml-latest-small")
    ratings = list(read_ratings(folder / "ratings.csv"))  # the header starts with a BOM
    assert [(r.user_id, r.item_id, r.rating, r.timestamp) for r in ratings] == [
        ("1", "31", 2.5, 1260759144),
        ("1", "1029", 3.0, 1260759179),
    ]
    toy, president, scorpio, miserables = read_movies(folder / "movies.csv")
    assert toy.genres == ("Adventure", "Animation", "Children")
    assert president.title == "American President, The (1995)"
    assert scorpio.genres == ()
    assert miserables.title == "Misérables, Les (1995)"
    (tag,) = read_movie_tags(folder / "tags.csv")
    assert (tag.user_id, tag.item_id, tag.tag, tag.timestamp) == (
        "15",
        "339",
        "sandra 'boring' bullock",
        1138537770,
    )


def test_csv_columns_without_a_header_name_are_ignored_and_their_values_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp,,,,\n"
        "1,31,2.5,1260759144,,,,\n"
        "1,1129,2,1260759185,,3.450819672,,3.543608256\n"
        "1,1263,2,1260759151,,2.5,,\n"
    )
    notes: Counter[str] = Counter()
    ratings = list(read_ratings(path, notes=notes))
    assert [r.item_id for r in ratings] == ["31", "1129", "1263"]
    assert notes == {NOTE_UNNAMED_VALUES: 2}  # rows, not values
    assert [r.rating for r in read_ratings(path)] == [2.5, 2.0, 2.0]  # notes are optional


def test_csv_header_naming_a_column_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tableA.csv"
    path.write_text("id,title,manufacturer,price,title\n1,a,b,2,c\n")
    with pytest.raises(DataError) as info:
        list(read_match_products(path))
    assert_located(info.value, path, 1, "header names column(s) title twice")


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("ratings.csv", "1,31,5.5,1260759144", "field 'rating' must be from 0.5 to 5, got 5.5"),
        ("ratings.csv", "1,31,0,1260759144", "field 'rating' must be from 0.5 to 5, got 0.0"),
        ("ratings.dat", "1::31::0.5::1260759144", "field 'rating' must be from 1 to 5, got 0.5"),
        ("u.data", "1\t31\t6\t881250949", "field 'rating' must be from 1 to 5, got 6.0"),
    ],
)
def test_movielens_rating_outside_the_scale_is_an_error(
    tmp_path: Path, name: str, line: str, reason: str
) -> None:
    path = tmp_path / name
    head = "userId,movieId,rating,timestamp\n" if name.endswith(".csv") else ""
    path.write_text(head + line + "\n")
    with pytest.raises(DataError) as info:
        list(read_ratings(path))
    assert_located(info.value, path, 2 if head else 1, reason)


def test_movies_csv_without_a_required_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text("movieId,title\n1,Toy Story (1995)\n")
    with pytest.raises(DataError) as info:
        list(read_movies(path))
    assert_located(info.value, path, 1, "header lacks column(s) genres")


# --- the real ml-latest-small copy (never committed: ../shared/realdata) ----------------------

REAL_MOVIELENS = Path(__file__).resolve().parents[2] / "shared/realdata/movielens-latest-small"


@pytest.fixture
def real_movielens() -> Path:
    if not (REAL_MOVIELENS / "ratings.csv").is_file():
        pytest.skip(f"real MovieLens copy not present at {REAL_MOVIELENS} (not in the repo)")
    return REAL_MOVIELENS


def test_the_real_ml_latest_small_copy_is_discovered_and_read_whole(
    tmp_path: Path, real_movielens: Path
) -> None:
    (tmp_path / "movielens").mkdir()
    (tmp_path / "movielens" / "ml-latest-small").symlink_to(real_movielens)
    sources = discover_sources(tmp_path)
    (files,) = sources.movielens
    assert (files.variant, files.users, files.tags) == (
        "ml-latest-small",
        None,
        tmp_path / "movielens/ml-latest-small/tags.csv",
    )
    assert {p.name for p in sources.ignored} == {"links.csv", "README.txt"}
    notes: Counter[str] = Counter()
    ratings = list(read_ratings(files.ratings, notes=notes))
    movies = list(read_movies(files.movies, notes=notes))
    assert files.tags is not None
    tags = list(read_movie_tags(files.tags, notes=notes))
    assert (len(ratings), len(movies), len(tags)) == (100_004, 9_125, 1_296)
    # Every ratings line ends in four unnamed columns; two of them hold numbers.
    assert notes == {NOTE_UNNAMED_VALUES: 2}
    assert {r.rating for r in ratings} == {step / 2 for step in range(1, 11)}
    assert len({r.user_id for r in ratings}) == 671
    assert any("," in m.title for m in movies)


# --- checks every reader makes: time units, ranges, byte-order marks, all bad lines ----------


@pytest.mark.parametrize(
    ("reader", "name", "record", "reason"),
    [
        (
            read_reviews,
            "r.jsonl",
            with_field(REVIEW, timestamp=1260759144),
            "field 'timestamp': timestamp 1260759144 looks like seconds; "
            "Amazon Reviews 2023 writes milliseconds",
        ),
        (
            read_reviews,
            "r.jsonl",
            with_field(REVIEW, timestamp=5),
            "field 'timestamp': timestamp 5 is outside 1990-01-01..2040-01-01 in milliseconds",
        ),
        (
            read_reviews_2018,
            "Books.json",
            with_field(REVIEW_2018, unixReviewTime=1252800000000),
            "timestamp 1252800000000 looks like milliseconds; "
            "Amazon Reviews 2014/2018 writes seconds",
        ),
    ],
)
def test_amazon_timestamp_in_the_wrong_unit_is_an_error(
    tmp_path: Path, reader, name: str, record: dict, reason: str
) -> None:
    path = write_jsonl(tmp_path / name, [record])
    with pytest.raises(DataError) as info:
        list(reader(path))
    assert_located(info.value, path, 1, reason)


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        (
            "ratings.csv",
            "1,31,2.5,1260759144000",
            "timestamp 1260759144000 looks like milliseconds; MovieLens writes seconds",
        ),
        ("u.data", "1\t31\t3\t-1", "timestamp -1 is outside 1990-01-01..2040-01-01 in seconds"),
        (
            "tags.csv",
            "15,339,dentist,99999999999",
            "timestamp 99999999999 is outside 1990-01-01..2040-01-01 in seconds",
        ),
    ],
)
def test_movielens_timestamp_in_the_wrong_unit_is_an_error(
    tmp_path: Path, name: str, line: str, reason: str
) -> None:
    path = tmp_path / name
    head = {
        "ratings.csv": "userId,movieId,rating,timestamp\n",
        "tags.csv": "userId,movieId,tag,timestamp\n",
    }
    path.write_text(head.get(name, "") + line + "\n")
    reader = read_movie_tags if name == "tags.csv" else read_ratings
    with pytest.raises(DataError) as info:
        list(reader(path))
    assert_located(info.value, path, 2 if name in head else 1, reason)


def test_amazon_rating_outside_1_to_5_is_an_error_not_clamped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [with_field(REVIEW, rating=7.0)])
    with pytest.raises(DataError) as info:
        list(read_reviews(path))
    assert_located(info.value, path, 1, "field 'rating' must be from 1 to 5, got 7.0")


@pytest.mark.parametrize("price", [-5, -0.5, "-$5.00", "$-5.00"])
def test_negative_price_in_json_is_an_error(tmp_path: Path, price: object) -> None:
    path = write_jsonl(tmp_path / "meta_X.jsonl", [with_field(META, price=price)])
    with pytest.raises(DataError) as info:
        list(read_item_meta(path))
    assert_located(info.value, path, 1, "field 'price' must not be negative")


@pytest.mark.parametrize("price", ["-5", "-5.00", "-$5"])
def test_negative_price_in_csv_is_the_same_error(tmp_path: Path, price: str) -> None:
    path = tmp_path / "tableA.csv"
    path.write_text(f"id,title,manufacturer,price\n0,a,b,{price}\n")
    with pytest.raises(DataError) as info:
        list(read_match_products(path))
    assert_located(info.value, path, 2, "field 'price' must not be negative, got -5")


def test_a_byte_order_mark_is_stripped_in_latin1_files_too(tmp_path: Path) -> None:
    path = tmp_path / "u.user"
    path.write_bytes(b"\xef\xbb\xbf1|24|M|technician|85711\n2|53|F|other|94043\n")
    assert [u.user_id for u in read_movie_users(path)] == ["1", "2"]


def test_a_byte_order_mark_is_stripped_from_a_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbfltable_id,rtable_id,label\n0,5,1\n")
    assert [p.ltable_id for p in read_match_pairs(path)] == ["0"]


def test_a_file_with_many_bad_lines_reports_the_total_and_the_first_ten(tmp_path: Path) -> None:
    lines = [json.dumps(REVIEW)]
    for i in range(14):
        lines.append("{not json" if i % 2 else json.dumps(with_field(REVIEW, user_id=None)))
    lines.append(json.dumps(with_field(REVIEW, text=["x" * 10_000])))  # a huge bad value
    lines.append(json.dumps(with_field(REVIEW, user_id="U-last")))
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    read = []
    with pytest.raises(BadLinesError) as info:
        read.extend(r.user_id for r in read_reviews(path))
    assert read == ["U1", "U-last"]  # good records before and after the bad ones
    err = info.value
    assert (err.path, err.line, err.count, len(err.first)) == (path, None, 15, 10)
    assert [e.line for e in err.first] == list(range(2, 12))
    message = str(err).splitlines()
    assert message[0] == f"{path}: 15 bad lines, the first 10:"
    assert message[1] == f"  {path}:2: required field 'user_id' is null"
    assert message[2].startswith(f"  {path}:3: malformed JSON")
    assert len(message) == 11


def test_two_bad_lines_are_both_listed_and_a_long_value_is_quoted_short(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n"
        f"1,31,{'x' * 5000},1260759144\n"
        "1,32,4,1260759144\n"
        "1,33,4\n"
    )
    with pytest.raises(BadLinesError) as info:
        list(read_ratings(path))
    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 2 bad lines:"
    assert f"{path}:2: field 'rating' must be a number, got str 'xxx" in message
    assert f"{path}:4: row has 3 columns, the header has 4" in message
    assert len(message) < 600


@pytest.mark.parametrize(
    ("name", "text", "bad_lines"),
    [
        ("u.data", "1\t2\t3\t881250949\n1\t2\n1\t2\tx\t881250949\n", [2, 3]),
        ("tableB.csv", 'id,title,manufacturer,price\n0,a,b,1\n1,"a,b\n', [3]),
        ("val-qar.jsonl", '{"qid": 1}\n[]\n', [1, 2]),
    ],
)
def test_every_text_reader_keeps_reading_after_a_bad_line(
    tmp_path: Path, name: str, text: str, bad_lines: list[int]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    reader = {"u.data": read_ratings, "tableB.csv": read_match_products}.get(name, read_amazonqa)
    with pytest.raises(DataError) as info:
        list(reader(path))
    reported = info.value.first if isinstance(info.value, BadLinesError) else (info.value,)
    assert [e.line for e in reported] == bad_lines


def test_parquet_rows_are_all_reported_too(tmp_path: Path) -> None:
    ex_path, pr_path = write_esci(tmp_path)
    table = pq.read_table(ex_path)
    labels = pa.array(["X", "E", "Y"])
    pq.write_table(
        table.set_column(table.schema.get_field_index("esci_label"), "esci_label", labels), ex_path
    )
    with pytest.raises(BadLinesError) as info:
        list(read_esci(ex_path, pr_path))
    assert [(e.line, e.reason) for e in info.value.first] == [
        (1, "esci_label must be one of E, S, C, I, got 'X'"),
        (3, "esci_label must be one of E, S, C, I, got 'Y'"),
    ]


def test_a_bad_line_then_a_truncated_gzip_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    records = [with_field(REVIEW, user_id=f"U{i}", text="x" * 200) for i in range(400)]
    text = "{bad\n" + "".join(json.dumps(r) + "\n" for r in records)
    whole = gzip.compress(text.encode())
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadLinesError) as info:
        list(read_reviews(path))
    first, last = info.value.first
    assert (first.line, first.reason.startswith("malformed JSON")) == (1, True)
    assert "gzip stream is truncated or corrupt" in last.reason


# --- Amazon-Google ---------------------------------------------------------------------------


def test_match_products_read_quoted_csv_and_empty_price(tmp_path: Path) -> None:
    path = tmp_path / "tableA.csv"
    path.write_text(
        "id,title,manufacturer,price\n"
        '0,"clickart 950 000 , premier image pack",broderbund,\n'
        "1,learning quickbooks 2007,intuit,38.99\n"
    )
    first, second = read_match_products(path)
    assert (first.id, first.title, first.price) == (
        "0",
        "clickart 950 000 , premier image pack",
        None,
    )
    assert (second.manufacturer, second.price) == ("intuit", 38.99)


def test_match_pairs_read_labels(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("ltable_id,rtable_id,label\n0,5,1\n0,7,0\n")
    assert [(p.ltable_id, p.rtable_id, p.label) for p in read_match_pairs(path)] == [
        ("0", "5", 1),
        ("0", "7", 0),
    ]


def test_csv_row_with_wrong_column_count_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tableB.csv"
    path.write_text("id,title,manufacturer,price\n0,a,b,1.0\n1,a,b,1.0,extra\n")
    with pytest.raises(DataError) as info:
        list(read_match_products(path))
    assert_located(info.value, path, 3, "row has 5 columns, the header has 4")


def test_csv_header_missing_a_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "valid.csv"
    path.write_text("ltable_id,label\n0,1\n")
    with pytest.raises(DataError) as info:
        list(read_match_pairs(path))
    assert_located(info.value, path, 1, "header lacks column(s) rtable_id")


def test_csv_label_outside_0_1_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("ltable_id,rtable_id,label\n0,5,1\n0,7,yes\n")
    with pytest.raises(DataError) as info:
        list(read_match_pairs(path))
    assert_located(info.value, path, 3, "field 'label' must be an integer, got str 'yes'")


def test_csv_with_header_only_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("ltable_id,rtable_id,label\n")
    with pytest.raises(DataError) as info:
        list(read_match_pairs(path))
    assert_located(info.value, path, None, "no data rows")


def test_csv_with_non_utf8_bytes_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tableA.csv"
    path.write_bytes(b"id,title,manufacturer,price\n0,a,b,1\n1,caf\xe9,b,2\n")
    with pytest.raises(DataError) as info:
        list(read_match_products(path))
    assert_located(info.value, path, 3, "not valid UTF-8")


# --- discover --------------------------------------------------------------------------------


def make_layout(data: Path) -> None:
    """A complete raw layout; file contents do not matter to discovery."""
    files = [
        "amazon_reviews/All_Beauty.jsonl.gz",
        "amazon_reviews/meta_All_Beauty.jsonl.gz",
        "amazon_reviews/Video_Games.jsonl",
        "amazon_reviews/meta_Video_Games.jsonl",
        "amazon_reviews/README.md",
        "esci/shopping_queries_dataset_examples.parquet",
        "esci/shopping_queries_dataset_products.parquet",
        "amazonqa/train-qar.jsonl",
        "amazonqa/val-qar.jsonl.gz",
        "movielens/ml-100k/u.data",
        "movielens/ml-100k/u.item",
        "movielens/ml-100k/u.user",
        *(f"amazon_google/{n}" for n in ("tableA.csv", "tableB.csv", "train.csv")),
        *(f"amazon_google/{n}" for n in ("valid.csv", "test.csv")),
    ]
    for name in files:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("x\n")


def test_discover_lists_every_source_in_the_documented_layout(tmp_path: Path) -> None:
    make_layout(tmp_path)
    sources = discover_sources(tmp_path)
    assert sources.present == ("amazon_reviews", "esci", "amazonqa", "movielens", "amazon_google")
    assert [(c.category, c.reviews.name, c.meta.name) for c in sources.amazon_reviews] == [
        ("All_Beauty", "All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl.gz"),
        ("Video_Games", "Video_Games.jsonl", "meta_Video_Games.jsonl"),
    ]
    assert [p.name for p in sources.amazonqa] == ["train-qar.jsonl", "val-qar.jsonl.gz"]
    (movielens,) = sources.movielens
    assert (movielens.variant, movielens.ratings.name) == ("ml-100k", "u.data")
    (esci,) = sources.esci
    assert esci.products == tmp_path / "esci/shopping_queries_dataset_products.parquet"
    (google,) = sources.amazon_google
    assert (google.table_a.name, google.test.name) == ("tableA.csv", "test.csv")


def test_discover_allows_absent_sources(tmp_path: Path) -> None:
    make_layout(tmp_path)
    for name in ("esci", "amazonqa", "movielens", "amazon_google"):
        for path in sorted((tmp_path / name).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (tmp_path / name).rmdir()
    sources = discover_sources(tmp_path)
    assert sources.present == ("amazon_reviews",)
    assert sources.esci == () and sources.movielens == () and sources.amazon_google == ()


@pytest.mark.parametrize(
    ("remove", "missing"),
    [
        ("amazon_reviews/meta_Video_Games.jsonl", "amazon_reviews/meta_Video_Games.jsonl"),
        ("amazon_reviews/All_Beauty.jsonl.gz", "amazon_reviews/All_Beauty.jsonl"),
        (
            "esci/shopping_queries_dataset_products.parquet",
            "esci/shopping_queries_dataset_products.parquet",
        ),
        ("movielens/ml-100k/u.item", "movielens/ml-100k/u.item"),
        ("amazon_google/valid.csv", "amazon_google/valid.csv"),
    ],
)
def test_discover_names_a_missing_required_file(tmp_path: Path, remove: str, missing: str) -> None:
    make_layout(tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == tmp_path / missing
    assert "missing" in info.value.reason


def test_discover_rejects_a_source_directory_without_files(tmp_path: Path) -> None:
    (tmp_path / "movielens").mkdir()
    with pytest.raises(DataError, match="no MovieLens variant found"):
        discover_sources(tmp_path)
    (tmp_path / "movielens").rmdir()
    (tmp_path / "amazonqa").mkdir()
    with pytest.raises(DataError, match="no AmazonQA file"):
        discover_sources(tmp_path)


def test_discover_finds_movielens_csv_sets_by_their_files(tmp_path: Path) -> None:
    write_ml_csv(tmp_path / "movielens" / "ml-latest-small")
    write_ml_csv(tmp_path / "movielens" / "ml-25m")
    (tmp_path / "movielens" / "ml-25m" / "tags.csv").unlink()
    for name in ("links.csv", "README.txt", "genome-scores.csv"):
        (tmp_path / "movielens" / "ml-25m" / name).write_text("x\n")
    sources = discover_sources(tmp_path)
    ml25m, small = sources.movielens
    assert (small.variant, small.users, small.tags) == (
        "ml-latest-small",
        None,
        tmp_path / "movielens/ml-latest-small/tags.csv",
    )
    assert (ml25m.variant, ml25m.ratings.name, ml25m.movies.name, ml25m.tags) == (
        "ml-25m",
        "ratings.csv",
        "movies.csv",
        None,
    )
    assert [p.name for p in sources.ignored] == ["README.txt", "genome-scores.csv", "links.csv"]


def test_discover_lists_unrelated_files_as_ignored(tmp_path: Path) -> None:
    make_layout(tmp_path)
    for name in (
        "amazon_reviews/.DS_Store",
        "amazonqa/LICENSE",
        "esci/shopping_queries_dataset_sources.csv",
        "movielens/README.txt",
        "movielens/ml-100k/u.genre",
        "notes.txt",
    ):
        (tmp_path / name).write_text("x\n")
    sources = discover_sources(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in sources.ignored] == [
        "amazon_reviews/.DS_Store",
        "amazon_reviews/README.md",
        "amazonqa/LICENSE",
        "esci/shopping_queries_dataset_sources.csv",
        "movielens/README.txt",
        "movielens/ml-100k/u.genre",
        "notes.txt",
    ]


def test_discover_pairs_amazon_2014_and_2018_files_by_category(tmp_path: Path) -> None:
    folder = tmp_path / "amazon_reviews_2018"
    folder.mkdir()
    for name in (
        "Books_5.json.gz",
        "meta_Books.json.gz",
        "reviews_Toys_and_Games_5.json",
        "meta_Toys_and_Games.json",
        "Video_Games.json",
        "meta_Video_Games.json",
        "Books.csv",  # the ratings-only file of 2018: not read
    ):
        (folder / name).write_text("x\n")
    sources = discover_sources(tmp_path)
    assert sources.present == ("amazon_reviews_2018",)
    assert [
        (c.category, c.release, c.reviews.name, c.meta.name) for c in sources.amazon_reviews_2018
    ] == [
        ("Books", "2018", "Books_5.json.gz", "meta_Books.json.gz"),
        ("Toys_and_Games", "2014", "reviews_Toys_and_Games_5.json", "meta_Toys_and_Games.json"),
        ("Video_Games", "2018", "Video_Games.json", "meta_Video_Games.json"),
    ]
    assert [p.name for p in sources.ignored] == ["Books.csv"]


@pytest.mark.parametrize(
    ("names", "error_path", "reason"),
    [
        (["Books.json", "Books_5.json", "meta_Books.json"], "Books_5.json", "keep one"),
        (["Books_5.json"], "meta_Books.json", "required file is missing"),
        (["meta_Books.json.gz"], "Books.json", "required file is missing"),
        (["README.md"], "", "no <Category>[_5].json[.gz]"),
    ],
)
def test_discover_rejects_an_incomplete_or_ambiguous_amazon_2018_folder(
    tmp_path: Path, names: list[str], error_path: str, reason: str
) -> None:
    folder = tmp_path / "amazon_reviews_2018"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x\n")
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == folder / error_path if error_path else folder
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("amazon_reviews/Books.json", "expected Books.jsonl (2014/2018 .json files belong in"),
        ("amazon_reviews/Books.JSONL", "expected Books.jsonl"),
        ("amazon_reviews/meta_Books.Jsonl.gz", "expected meta_Books.jsonl.gz"),
        ("amazon_reviews_2018/Books.jsonl", "expected Books.json (Amazon Reviews 2023 .jsonl"),
        ("amazonqa/val-qar.JSONL", "expected val-qar.jsonl"),
        ("amazonqa/train-qar.json", "expected train-qar.jsonl"),
        ("movielens/ml-latest-small/Ratings.csv", "expected ratings.csv"),
        ("movielens/ml-100k/u.data.txt", "expected u.data"),
        ("movielens/ml-1m/ratings.txt", "expected ratings.dat or ratings.csv"),
        ("esci/Shopping_Queries_Dataset_Products.parquet", "expected " + "shopping_queries_"),
        ("esci/shopping_queries_dataset_examples.csv", "dataset_examples.parquet"),
        ("amazon_google/tablea.csv", "expected tableA.csv"),
        ("amazon_google/test.CSV", "expected test.csv"),
    ],
)
def test_discover_names_a_file_with_a_near_miss_name(
    tmp_path: Path, name: str, expected: str
) -> None:
    make_layout(tmp_path)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x\n")
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == path
    assert "looks like a source file but is misnamed" in info.value.reason
    assert expected in info.value.reason


@pytest.mark.parametrize(
    "link", ["amazon_reviews/Books.jsonl", "movielens/ml-100k/u.genre", "esci/README"]
)
def test_discover_names_a_dangling_symlink(tmp_path: Path, link: str) -> None:
    make_layout(tmp_path)
    (tmp_path / link).symlink_to(tmp_path / "gone")
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == tmp_path / link
    assert f"dangling symbolic link: its target {tmp_path / 'gone'} is gone" in info.value.reason


def test_discover_rejects_movielens_files_outside_a_set_folder(tmp_path: Path) -> None:
    make_layout(tmp_path)
    (tmp_path / "movielens" / "ratings.csv").write_text("x\n")
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == tmp_path / "movielens" / "ratings.csv"
    assert "MovieLens files go in a folder per set: movielens/<set>/" in info.value.reason


def test_discover_rejects_a_folder_mixing_movielens_layouts(tmp_path: Path) -> None:
    make_layout(tmp_path)
    write_ml_csv(tmp_path / "movielens" / "ml-100k")
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == tmp_path / "movielens" / "ml-100k"
    assert "files of two MovieLens layouts (u.data and ratings.csv)" in info.value.reason


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("MovieLens", "movielens"),
        ("amazon-reviews", "amazon_reviews"),
        ("Amazon_Reviews_2014", "amazon_reviews_2018"),
    ],
)
def test_discover_names_a_misnamed_source_directory(
    tmp_path: Path, folder: str, expected: str
) -> None:
    (tmp_path / folder).mkdir()
    with pytest.raises(DataError) as info:
        discover_sources(tmp_path)
    assert info.value.path == tmp_path / folder
    assert f"looks like a source directory but is misnamed; expected {expected}" in str(info.value)


# --- the validate stage's frames cover every layout ------------------------------------------


def test_raw_batches_cover_movielens_csv_sets_and_amazon_2018(tmp_path: Path) -> None:
    write_ml_csv(tmp_path / "movielens" / "ml-latest-small")
    folder = tmp_path / "amazon_reviews_2018"
    folder.mkdir()
    write_jsonl(folder / "Books_5.json", [REVIEW_2018, REVIEW_2014])
    (folder / "meta_Books.json").write_text(json.dumps(META_2018) + "\n" + META_2014_LINE + "\n")
    batches = {b.name: b for b in raw_batches(tmp_path, sample_rows=100, seed=0)}
    assert {name: b.suite for name, b in batches.items()} == {
        "amazon_reviews_2018/Books_5.json": "raw_reviews",
        "amazon_reviews_2018/meta_Books.json": "raw_item_meta",
        "movielens/ml-latest-small/ratings.csv": "raw_ratings",
        "movielens/ml-latest-small/movies.csv": "raw_movies",
        "movielens/ml-latest-small/tags.csv": "raw_movie_tags",
    }
    reviews = batches["amazon_reviews_2018/Books_5.json"].frame
    assert reviews["timestamp"].tolist() == [1252800000000, 1385769600000]
    ratings = batches["movielens/ml-latest-small/ratings.csv"].frame
    assert ratings["rating"].tolist() == [2.5, 3.0]
    assert set(ratings["rating"]) <= set(gx_suites.HALF_STARS)


# --- bounded lines (build.max_line_bytes) ----------------------------------------------------

SMALL_LIMIT = 1024  # bytes: longer than any test record, shorter than the "corrupt" lines


@pytest.mark.parametrize("compress", [False, True])
def test_a_line_longer_than_max_line_bytes_is_a_bad_line_naming_its_length(
    tmp_path: Path, compress: bool
) -> None:
    long = json.dumps(with_field(REVIEW, text="x" * 5000))
    last = with_field(REVIEW, user_id="U-last")
    text = "\n".join([json.dumps(REVIEW), long, json.dumps(last)]) + "\n"
    path = tmp_path / "All_Beauty.jsonl"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    read = []
    with line_limit(SMALL_LIMIT), pytest.raises(LineTooLongError) as info:
        read.extend(r.user_id for r in read_reviews(path))
    assert read == ["U1", "U-last"]  # the lines around it are read
    assert_located(info.value, path, 2, f"line is {len(long):,} bytes long, longer than 1,024")
    assert "build.max_line_bytes" in info.value.reason


def test_a_line_of_exactly_max_line_bytes_is_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [with_field(REVIEW, text="x" * 900)])
    length = len(path.read_bytes()) - 1  # the line without its line break
    with line_limit(length):
        assert [r.user_id for r in read_reviews(path)] == ["U1"]
    with line_limit(length - 1), pytest.raises(LineTooLongError):
        list(read_reviews(path))


def test_a_file_without_line_breaks_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "All_Beauty.jsonl"
    size = 8_000_000
    path.write_bytes(b"x" * size)  # a corrupt file: one 8 MB "line", no line break
    tracemalloc.start()
    try:
        with line_limit(SMALL_LIMIT), pytest.raises(DataError) as info:
            list(read_reviews(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_located(info.value, path, 1, f"line is {size:,} bytes long")
    assert peak < size // 8  # a few chunks of the bound, never the line


def test_a_long_csv_row_and_a_runaway_quoted_record_are_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "tableA.csv"
    long_row = "1," + "t" * 2000 + ",b,2"
    runaway = '3,"an unclosed quote,b,2\n' + "".join(f"{n},word,b,2\n" for n in range(100, 300))
    path.write_text("id,title,manufacturer,price\n0,a,b,1\n" + long_row + "\n2,c,d,3\n" + runaway)
    read = []
    with line_limit(SMALL_LIMIT), pytest.raises(BadLinesError) as info:
        read.extend(p.id for p in read_match_products(path))
    first, second = info.value.first
    assert_located(first, path, 3, f"line is {len(long_row):,} bytes long")
    assert_located(second, path, 5, "CSV record runs on to line")
    assert "build.max_line_bytes" in second.reason
    assert read[:2] == ["0", "2"]  # rows around the long line are read
    assert read[-1] == "299"  # and so are the lines after the record was cut short


def test_a_csv_header_longer_than_the_bound_ends_the_read_at_line_1(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("ltable_id,rtable_id,label," + "x" * 2000 + "\n0,5,1\n")
    with line_limit(SMALL_LIMIT), pytest.raises(BadLinesError) as info:
        list(read_match_pairs(path))
    assert [(e.line, type(e)) for e in info.value.first] == [
        (1, LineTooLongError),
        (1, DataError),
    ]
    assert "header line is unreadable" in info.value.first[1].reason


def test_a_csv_field_longer_than_the_csv_modules_default_is_read(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    tag = "long " * 40_000  # 200,000 characters: over csv's 131,072, under the line bound
    path.write_text(f"userId,movieId,tag,timestamp\n15,339,{tag},1138537770\n")
    (read,) = read_movie_tags(path)
    assert read.tag == tag


def test_max_line_bytes_is_a_bounded_build_setting() -> None:
    assert BuildConfig().max_line_bytes == common.DEFAULT_MAX_LINE_BYTES == 16 * 1024 * 1024
    for wrong in (0, 100, 2 * 1024**3):
        with pytest.raises(ValidationError, match="max_line_bytes"):
            BuildConfig(max_line_bytes=wrong)


# --- encodings: a Latin-1 format file that is UTF-8 ------------------------------------------


def ml100k_item(movie_id: str, title: str) -> str:
    return "|".join([movie_id, title, "01-Jan-1995", "", "http://x", *(["0"] * 19)])


@pytest.mark.parametrize("chunk", [common.SNIFF_CHUNK, 3])  # 3: chunks split "é" in two
def test_a_latin1_format_file_reencoded_as_utf8_is_read_as_utf8_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(common, "SNIFF_CHUNK", chunk)
    path = tmp_path / "u.item"
    lines = [ml100k_item("1", "Café (1999)"), ml100k_item("2", "Heat (1995)")]
    lines.append(ml100k_item("3", "Misérables, Les (1995)"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    notes: Counter[str] = Counter()
    titles = [m.title for m in read_movies(path, notes=notes)]
    assert titles == ["Café (1999)", "Heat (1995)", "Misérables, Les (1995)"]
    assert notes == {NOTE_READ_AS_UTF8: 2}  # the lines holding non-ASCII text


def test_latin1_and_ascii_files_keep_the_documented_encoding_without_a_note(
    tmp_path: Path,
) -> None:
    latin1 = tmp_path / "movies.dat"
    latin1.write_bytes("1::Café (1999)::Drama\n2::Toy Story (1995)::Comedy\n".encode("latin-1"))
    ascii_with_bom = tmp_path / "users.dat"
    ascii_with_bom.write_bytes(b"\xef\xbb\xbf1::F::1::10::48067\n")
    notes: Counter[str] = Counter()
    assert [m.title for m in read_movies(latin1, notes=notes)][0] == "Café (1999)"
    assert [u.user_id for u in read_movie_users(ascii_with_bom, notes=notes)] == ["1"]
    assert notes == {}


def test_a_file_valid_utf8_at_first_but_latin1_later_stays_latin1(tmp_path: Path) -> None:
    path = tmp_path / "movies.dat"
    path.write_bytes(
        "1::Café (1999)::Drama\n".encode()
        + b"2::Toy Story (1995)::Comedy\n" * 50_000
        + "3::Noël (2004)::Drama\n".encode("latin-1")
    )
    assert common.text_encoding(path, common.LATIN1) == common.LATIN1
    assert common.text_encoding(path, common.UTF8) == common.UTF8  # UTF-8 formats: no scan


# --- copies: one file of a source twice ------------------------------------------------------


def test_refuse_copies_names_both_files_of_the_same_movielens_set_twice(tmp_path: Path) -> None:
    write_ml_csv(tmp_path / "movielens" / "ml-latest-small")
    shutil.copytree(
        tmp_path / "movielens" / "ml-latest-small", tmp_path / "movielens" / "ml-latest-small-2"
    )
    with pytest.raises(DataError) as info:
        refuse_copies(discover_sources(tmp_path))
    original = tmp_path / "movielens/ml-latest-small/ratings.csv"
    copy = tmp_path / "movielens/ml-latest-small-2/ratings.csv"
    assert_located(info.value, copy, None, f"the same bytes as {original} (sha256 ")
    assert "keep one copy" in str(info.value) and "\n" not in str(info.value)


def test_refuse_copies_passes_files_of_equal_size_but_other_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "amazonqa"
    folder.mkdir()
    write_jsonl(folder / "train-qar.jsonl", [with_field(QA, qid=1)])
    write_jsonl(folder / "val-qar.jsonl", [with_field(QA, qid=2)])
    assert (folder / "train-qar.jsonl").stat().st_size == (folder / "val-qar.jsonl").stat().st_size
    refuse_copies(discover_sources(tmp_path))  # no error
    shutil.copyfile(folder / "train-qar.jsonl", folder / "val-qar.jsonl")
    with pytest.raises(DataError, match="the same bytes as .*train-qar.jsonl"):
        refuse_copies(discover_sources(tmp_path))
