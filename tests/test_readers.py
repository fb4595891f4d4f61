"""The raw readers: they stream the public formats into typed records and fail with located errors.

Every error test asserts the DataError names the file, the line (or parquet row) and the reason.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recfound.data.readers import (
    discover_sources,
    read_amazonqa,
    read_esci,
    read_item_meta,
    read_match_pairs,
    read_match_products,
    read_movie_users,
    read_movies,
    read_ratings,
    read_reviews,
)
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
    path = tmp_path / "ratings.csv"
    path.write_text("1,2,3,4\n")
    with pytest.raises(DataError) as info:
        list(read_ratings(path))
    assert_located(info.value, path, None, "expected u.data or ratings.dat")


def test_empty_movielens_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "u.user"
    path.write_text("")
    with pytest.raises(DataError) as info:
        list(read_movie_users(path))
    assert_located(info.value, path, None, "file is empty")


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
