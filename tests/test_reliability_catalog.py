"""Bad catalog input: every bad row is reported with its row number and reason, good rows go on.

A file that cannot be read at all is one ``CatalogError`` naming the file (and, for an encoding
problem, the byte and line). Choice for a non-UTF-8 file: it is refused, not guessed at, because
a wrong guess silently changes the titles that are embedded and shown to shoppers.
"""

from __future__ import annotations

import gzip
import json
import shutil

import pandas as pd
import pytest

from engine.errors import CatalogError
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, require

HEADER = "id,title,image,price,category"


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def csv_text(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def problems(catalog) -> dict[int, str]:
    return {error.row: str(error) for error in catalog.errors}


# --- rows ------------------------------------------------------------------------------------------
def test_missing_and_duplicate_ids_and_empty_titles_are_reported_by_row(tmp_path):
    path = write(tmp_path, "catalog.csv", csv_text(
        HEADER,
        "1,Blue shirt,a.jpg,10,Shirts",
        ",No id,b.jpg,10,Shirts",  # row 2
        "3,,c.jpg,10,Shirts",  # row 3
        "1,Blue shirt again,d.jpg,10,Shirts",  # row 4
        "5,   ,e.jpg,10,Shirts",  # row 5
        "6,Red shirt,,10,Shirts",  # row 6
        "7,Green shirt,g.jpg,,",
    ))
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["1", "7"]
    found = problems(catalog)
    assert found[2] == "row 2, field 'id': missing id"
    assert found[3] == "row 3 (id 3), field 'title': missing or empty title"
    assert found[4] == "row 4 (id 1), field 'id': duplicate id, first seen in row 1"
    assert found[5].endswith("missing or empty title")
    assert found[6] == "row 6 (id 6), field 'image': no image path or URL"
    assert catalog.rows[1].price is None and catalog.rows[1].category is None


@pytest.mark.parametrize("price, reason", [
    ("cheap", "price 'cheap' is not a number"),
    ("€12", "price '€12' is not a number"),
    ("-5", "must be a finite number >= 0"),
    ("nan", "must be a finite number >= 0"),
    ("inf", "must be a finite number >= 0"),
    ("1e999", "must be a finite number >= 0"),
    ('"12,50"', "price '12,50' is ambiguous"),  # a decimal comma must not become 1250
    ('"1.299,00"', "is ambiguous"),
])
def test_bad_prices_are_reported_and_the_row_skipped(tmp_path, price, reason):
    path = write(tmp_path, "catalog.csv", f"{HEADER}\n1,Shirt,a.jpg,{price},Shirts\n2,Jeans,b.jpg,20,Jeans\n")
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["2"]
    assert reason in problems(catalog)[1] and "field 'price'" in problems(catalog)[1]


def test_good_prices_in_their_usual_spellings(tmp_path):
    path = write(tmp_path, "catalog.csv", f'{HEADER}\n1,A,a.jpg," 12.5 ",x\n2,B,b.jpg,"1,299.50",x\n3,C,c.jpg,0,x\n'
                                          "4,D,d.jpg,7,x\n")
    assert [row.price for row in read_catalog(path).rows] == [12.5, 1299.5, 0.0, 7.0]


def test_unknown_columns_are_kept_and_optional_columns_may_be_missing(tmp_path):
    path = write(tmp_path, "catalog.csv", "sku,name,photo,colour,Material\n1,Shirt,a.jpg,blue,\n")
    row = read_catalog(path).rows[0]
    assert (row.product_id, row.title, row.images, row.price, row.category) == ("1", "Shirt", ["a.jpg"], None, None)
    assert row.fields == {"colour": "blue"}  # an empty cell is not stored


@pytest.mark.parametrize("header, missing", [
    ("name,image,price", "no id column"),
    ("id,image,price", "no title column"),
    ("id,title,price", "no image column"),
])
def test_a_file_without_an_id_title_or_image_column_is_one_clear_error(tmp_path, header, missing):
    path = write(tmp_path, "catalog.csv", f"{header}\na,b,c\n")
    with pytest.raises(CatalogError) as refused:
        read_catalog(path)
    assert str(path) in str(refused.value) and missing in str(refused.value)
    assert "its columns are" in str(refused.value)


def test_a_header_that_names_a_column_twice_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="the header names 'price' more than once"):
        read_catalog(write(tmp_path, "catalog.csv", "id,title,image,price,price\n1,a,b,1,2\n"))


def test_rows_with_too_few_or_too_many_fields(tmp_path):
    path = write(tmp_path, "catalog.csv", csv_text(
        HEADER,
        "1,Shirt,a.jpg",  # short: the missing trailing cells are empty
        "2,Jeans,b.jpg,20,Jeans,,",  # trailing empty cells, as spreadsheets write them
        "3,Socks,c.jpg,5,Socks,surplus",  # a stray comma somewhere: which column is which is unknown
        "4,Belt,d.jpg,9,Belts",
    ))
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["1", "2", "4"]
    assert problems(catalog) == {3: "row 3: line 4: 6 fields where the header has 5 (a stray comma?)"}


# --- broken CSV ---------------------------------------------------------------------------------------
def test_an_unclosed_quote_loses_only_its_own_row(tmp_path):
    path = write(tmp_path, "catalog.csv", csv_text(
        HEADER,
        "1,Shirt,a.jpg,10,Shirts",
        '2,"Blue shirt,b.jpg,10,Shirts',  # the quote is never closed
        "3,Red shirt,c.jpg,10,Shirts",
        "4,Green shirt,d.jpg,10,Shirts",
    ))
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["1", "3", "4"]
    assert problems(catalog)[2].startswith("row 2: line 3: broken CSV")
    assert "quote" in problems(catalog)[2]


def test_an_unclosed_quote_does_not_pair_with_a_later_rows_quote_and_swallow_the_rows_between(tmp_path):
    path = write(tmp_path, "catalog.csv", csv_text(
        HEADER,
        '1,"Blue shirt,a.jpg,10,Shirts',  # unclosed ...
        "2,Red shirt,b.jpg,10,Shirts",
        '3,"Green shirt, slim",c.jpg,10,Shirts',  # ... and a well-quoted title two rows on
        "4,Belt,d.jpg,10,Belts",
    ))
    catalog = read_catalog(path)
    assert {row.product_id: row.title for row in catalog.rows} == {
        "2": "Red shirt", "3": "Green shirt, slim", "4": "Belt"}
    assert list(problems(catalog)) == [1]


def test_an_unclosed_quote_in_a_large_file_is_one_row_error(tmp_path):
    lines = [HEADER, '1,"Shirt,a.jpg,1,x'] + [f"{i},Product {i},p{i}.jpg,{i},x" for i in range(2, 20_001)]
    catalog = read_catalog(write(tmp_path, "catalog.csv", "\n".join(lines) + "\n"))
    assert len(catalog.rows) == 19_999 and list(problems(catalog)) == [1]


def test_a_quoted_title_with_a_line_break_is_one_row(tmp_path):
    path = write(tmp_path, "catalog.csv", f'{HEADER}\n1,"Shirt\nwith a pocket",a.jpg,1,x\n2,Belt,b.jpg,2,x\n')
    catalog = read_catalog(path)
    assert [row.title for row in catalog.rows] == ["Shirt\nwith a pocket", "Belt"] and not catalog.errors


# --- encodings and formats ----------------------------------------------------------------------
def test_a_latin_1_catalog_is_refused_naming_the_file_byte_and_line(tmp_path):
    text = f"{HEADER}\n1,Shirt,a.jpg,1,x\n2,Café crème shirt,b.jpg,2,x\n"
    path = write(tmp_path, "catalog.csv", text.encode("latin-1"))
    with pytest.raises(CatalogError) as refused:
        read_catalog(path)
    byte = text.encode("latin-1").index("é".encode("latin-1"))
    message = str(refused.value)
    assert str(path) in message and f"is not UTF-8: byte {byte} (line 3)" in message and "0xe9" in message
    assert "save it as UTF-8" in message


def test_utf8_with_a_bom_and_utf16_spreadsheet_exports_are_read(tmp_path):
    text = f"{HEADER}\n1,Café shirt,a.jpg,1,x\n"
    for name, data in [("bom.csv", b"\xef\xbb\xbf" + text.encode()), ("utf16.csv", text.encode("utf-16"))]:
        catalog = read_catalog(write(tmp_path, name, data))
        assert [row.title for row in catalog.rows] == ["Café shirt"], name


def test_a_semicolon_csv_is_read(tmp_path):
    catalog = read_catalog(write(tmp_path, "catalog.csv", "id;title;image;price\n1;Shirt;a.jpg;12.5\n"))
    assert [(row.product_id, row.price) for row in catalog.rows] == [("1", 12.5)]


@pytest.mark.parametrize("name, content", [
    ("empty.csv", ""),
    ("blank.csv", "\n  \n\n"),
    ("empty.jsonl", ""),
    ("blank.jsonl", "\n\n"),
    ("empty.json", "[]"),
])
def test_an_empty_file_is_one_clear_error(tmp_path, name, content):
    path = write(tmp_path, name, content)
    with pytest.raises(CatalogError, match=rf"catalog '.*{name}' is empty"):
        read_catalog(path)


def test_a_header_without_rows_is_an_empty_catalog(tmp_path):
    catalog = read_catalog(write(tmp_path, "catalog.csv", HEADER + "\n"))
    assert catalog.rows == [] and catalog.errors == []


def test_jsonl_lines_that_are_not_products_are_reported_by_line(tmp_path):
    lines = [
        {"id": 1, "title": "Shirt", "image": "a.jpg", "price": 10},
        "{not json",
        "[1, 2, 3]",
        {"id": {"nested": 1}, "title": "Odd", "image": "b.jpg"},
        {"id": 5, "title": ["a", "list"], "image": "c.jpg"},
        {"id": 6, "title": "Flag", "image": "d.jpg", "price": True},
        {"title": "No id", "image": "e.jpg"},
        {"id": 12345678901234567890, "title": "Big id", "image": "f.jpg", "price": "19.90"},
        "[" * 100_000,  # nested deeper than any parser should follow
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    catalog = read_catalog(write(tmp_path, "catalog.jsonl", text))
    assert {row.product_id: row.price for row in catalog.rows} == {"1": 10.0, "12345678901234567890": 19.9}
    found = problems(catalog)
    assert "not valid JSON" in found[2] and "column 2" in found[2]
    assert "a JSON object was expected, got list" in found[3]
    assert "field 'id': text or a number was expected, got a dict" in found[4]
    assert "field 'title': text or a number was expected, got a list" in found[5]
    assert "price True is not a number" in found[6]
    assert found[7].endswith("missing id")
    assert "not valid JSON" in found[9]


def test_a_broken_gzip_and_a_json_that_is_not_a_list_are_clear_errors(tmp_path):
    data = gzip.compress(f"{HEADER}\n1,Shirt,a.jpg,1,x\n".encode())
    assert [r.product_id for r in read_catalog(write(tmp_path, "catalog.csv.gz", data)).rows] == ["1"]
    with pytest.raises(CatalogError, match="cannot be read"):
        read_catalog(write(tmp_path, "truncated.csv.gz", data[:20]))
    with pytest.raises(CatalogError, match="a JSON array of products was expected, got dict"):
        read_catalog(write(tmp_path, "catalog.json", '{"id": 1}'))
    with pytest.raises(CatalogError, match="cannot be read as Parquet"):
        read_catalog(write(tmp_path, "catalog.parquet", b"PAR1 not really"))


# --- through the pipeline: counts add up, bad rows never cost good products ------------------------
@pytest.fixture()
def shop(tmp_path):
    frame = pd.read_csv(require(FASHION) / "catalog.csv").head(5)
    (tmp_path / "images").mkdir()
    for image in frame.image:
        shutil.copy(FASHION / image, tmp_path / "images")
    return frame


def catalog_text(frame: pd.DataFrame, extra: list[str]) -> str:
    good = [f"{r.id},{r.title},{r.image},{r.price},{r.category}" for r in frame.itertuples()]
    return "\n".join([HEADER, *good, *extra]) + "\n"


def test_a_mixed_catalog_stores_the_good_rows_and_the_summary_counts_match(tmp_path, shop, encoder):
    bad = [
        ",No id,images/x.jpg,1,x",
        f"{shop.id[0]},Duplicate,{shop.image[0]},1,x",
        "901,,images/x.jpg,1,x",
        "902,Cheap,images/x.jpg,cheap,x",
        "903,Negative,images/x.jpg,-1,x",
        '904,"Unclosed,images/x.jpg,1,x',
        "905,Missing photo,images/none.jpg,1,x",
        "906,Stray,images/x.jpg,1,x,y",
    ]
    path = write(tmp_path, "catalog.csv", catalog_text(shop, bad))
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
        summary = ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False)
        assert store.count() == len(shop)
    assert summary.rows == len(shop) + len(bad)
    assert summary.added == summary.stored == len(shop)
    assert summary.stored + len(summary.skipped_rows) == summary.rows
    assert {p.row for p in summary.skipped_rows} == set(range(len(shop) + 1, len(shop) + len(bad) + 1))
    assert [p.product_id for p in summary.bad_images] == ["905"]
    assert summary.as_dict()["skipped"] == len(bad) and len(summary.as_dict()["problems"]) == len(bad) + 1


def test_prune_keeps_products_whose_rows_are_broken_this_time(tmp_path, shop, encoder):
    path = write(tmp_path, "catalog.csv", catalog_text(shop, []))
    settings = IngestSettings()
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(path), encoder, store, settings, progress=False)
        # Product 0's price gets a typo, product 1 leaves the catalog: only product 1 is deleted.
        rows = catalog_text(shop, []).splitlines()
        rows[1] = rows[1].rsplit(",", 2)[0] + ",12;50," + rows[1].rsplit(",", 1)[1]
        write(tmp_path, "catalog.csv", "\n".join(rows[:2] + rows[3:]) + "\n")
        summary = ingest_catalog(read_catalog(path), encoder, store, settings, prune=True, progress=False)
        assert summary.deleted == 1 and store.count() == len(shop) - 1
        assert str(shop.id[0]) in store.get([str(shop.id[0])])
        # A row too broken to know whose it is: nothing is deleted, and the summary says why.
        write(tmp_path, "catalog.csv", "\n".join([rows[0], '"broken', *rows[3:]]) + "\n")
        summary = ingest_catalog(read_catalog(path), encoder, store, settings, prune=True, progress=False)
        assert summary.deleted == 0 and store.count() == len(shop) - 1
        assert summary.warnings and "prune skipped" in summary.warnings[0]
