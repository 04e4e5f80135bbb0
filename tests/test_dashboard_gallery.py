"""The dashboard's "Confident mistakes" section (mlray.dashboard.gallery): the gallery cards equal the ``gallery``
report's rows, each thumbnail of ``thumbnails`` is embedded once per (dataset, image id) however many models show
it, a dataset none of whose images could be read gets the report's note, the reliability chart's traces equal the
``reliability`` report's bins (ECE from ``model_metrics`` in the legend), absent reports are one-line notes, a page
with 48 real thumbnails stays within 2 MB of the same page without them, and the section works in headless
Chromium (the menus switch the cards and the chart, the images load; a screenshot in test-artifacts/gallery.png).

The browser test needs the Debian ``chromium`` and ``chromium-driver`` packages and ``selenium``; it skips (with
the reason) without them, and fails instead when ``MLRAY_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared
from test_dashboard import ARTIFACTS, HIST, STATS, _browser, embedded, write

from mlray.dashboard import build_dashboard
from mlray.gallery import GALLERY_SCHEMA, THUMBNAIL_SCHEMA
from mlray.scoring.frames import SCORE_SCHEMAS

RELIABILITY_SCHEMA = SCORE_SCHEMAS["reliability"]  # the producers' schemas: what mlray score writes
NAMES = {0: "tench", 1: "goldfish", 2: "great white shark", 3: "tiger shark", 4: "hammerhead", 5: "electric ray",
         6: "stingray", 7: "cock", 8: "hen", 9: "ostrich", 740: "power drill", 813: "spatula"}  # fmt: skip
UNREADABLE = "images of beta not readable: /data/beta does not exist"
BROKEN = "a5: truncated image (broken data stream when reading image file)"
WRITTEN_BY = "(written by mlray score / evaluate)"


def write_table(rows: list[dict], schema: pa.Schema, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{name}.parquet")


def square(color: tuple[int, int, int], size: tuple[int, int] = (128, 96)) -> bytes:
    """A JPEG of one colour (quality 75)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def gallery_row(model, dataset, kind, rank, image, original, valid, top, probs) -> dict:
    return {"model": model, "dataset": dataset, "kind": kind, "rank": rank, "image_id": image, "original": original,
            "original_name": NAMES[original] if original >= 0 else None, "valid": valid,
            "valid_names": [NAMES[v] for v in valid], "top": top, "top_names": [NAMES[t] for t in top],
            "top_prob": probs, "confidence": probs[0] if probs else math.nan}  # fmt: skip


# m2 comes first in the gallery report (the default model); the rows are not in rank order; a1 is shown by both
# models; a5 has no original label and an unreadable thumbnail; a4's prediction has no probabilities
GALLERY = [
    gallery_row("m2", "alpha", "valid_label", 2, "a2", 0, [0, 1], [1, 0, 2, 3, 4], [0.8, 0.1, 0.05, 0.03, 0.02]),
    gallery_row("m2", "alpha", "valid_label", 1, "a1", 2, [2, 3], [3, 2, 4, 5, 6], [0.9, 0.05, 0.03, 0.01, 0.01]),
    gallery_row("m2", "alpha", "real_error", 1, "a3", 7, [7, 8], [740, 7, 8, 9, 813], [0.821, 0.1, 0.05, 0.02, 0.009]),
    gallery_row("m2", "alpha", "real_error", 2, "a5", -1, [9], [813, 9, 740, 0, 1], [0.6, 0.3, 0.05, 0.03, 0.02]),
    gallery_row("m1", "alpha", "valid_label", 1, "a1", 2, [2, 3], [3, 2, 0, 1, 4], [0.7, 0.2, 0.05, 0.03, 0.02]),
    gallery_row("m1", "alpha", "real_error", 1, "a4", 5, [5], [6, 5, 4, 3, 2], [math.nan] * 5),
    gallery_row("m2", "beta", "valid_label", 1, "b1", 1, [1, 0], [0, 1, 2, 3, 4], [0.95, 0.02, 0.01, 0.01, 0.01]),
    gallery_row("m2", "beta", "real_error", 1, "b2", 4, [4], [3, 4, 2, 1, 0], [0.75, 0.2, 0.03, 0.01, 0.01]),
]
COLOURS = {"a1": (200, 30, 30), "a2": (30, 160, 60), "a3": (40, 80, 200), "a4": (230, 180, 20), "a9": (90, 90, 90)}
JPEGS = {image: square(c) for image, c in COLOURS.items()}  # a9 is in thumbnails but no gallery row shows it


def thumbnail_rows() -> list[dict]:
    rows = [{"dataset": "alpha", "image_id": i, "jpeg": j, "width": 128, "height": 96, "note": None}
            for i, j in JPEGS.items()]  # fmt: skip
    rows.append({"dataset": "alpha", "image_id": "a5", "jpeg": None, "width": 0, "height": 0, "note": BROKEN})
    rows += [{"dataset": "beta", "image_id": i, "jpeg": None, "width": 0, "height": 0, "note": UNREADABLE}
             for i in ("b1", "b2")]  # fmt: skip
    return rows


def reliability_rows(pairs=(("m2", "alpha"), ("m1", "alpha"), ("m2", "beta")), bins: int = 15) -> list[dict]:
    """All bins of every pair and truth; the low bins are empty (NaN confidence and accuracy)."""
    rng = np.random.default_rng(3)
    rows = []
    for model, dataset in pairs:
        for truth in ("original", "valid set"):
            for b in range(bins):
                lo, hi = b / bins, (b + 1) / bins
                n = 0 if b < 4 else int(rng.integers(1, 400))
                conf = math.nan if n == 0 else lo + (hi - lo) * float(rng.uniform(0.2, 0.8))
                acc = math.nan if n == 0 else min(1.0, conf * (0.85 if truth == "original" else 1.0) + 0.01 * b / bins)
                rows.append({"model": model, "dataset": dataset, "truth": truth, "bin": b, "bin_low": lo,
                             "bin_high": hi, "n": n, "confidence": conf, "accuracy": acc})  # fmt: skip
    return rows


def metrics() -> pd.DataFrame:
    """model_metrics with the ECE of m2 on alpha (m1's is not available) and a top-1 row per pair."""
    rows = []
    values = (("m1", "alpha", "top1", 0.7, True), ("m2", "alpha", "top1", 0.8, True), ("m2", "beta", "top1", 0.6, True),
              ("m2", "alpha", "ece_top1", 0.0321, True), ("m2", "alpha", "ece_real", 0.01234, True),
              ("m1", "alpha", "ece_top1", np.nan, False))  # fmt: skip
    for model, dataset, metric, value, ok in values:
        rows.append({"model": model, "dataset": dataset, "metric": metric, "value": value, "ci_low": np.nan,
                     "ci_high": np.nan, "n": 10, "available": ok})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture()
def gallery_reports(tmp_path) -> Path:
    folder = tmp_path / "reports"
    write(HIST, folder, "label_count_hist")
    write(STATS, folder, "dataset_stats")
    write(metrics(), folder, "model_metrics")
    write_table(GALLERY, GALLERY_SCHEMA, folder, "gallery")
    write_table(thumbnail_rows(), THUMBNAIL_SCHEMA, folder, "thumbnails")
    write_table(reliability_rows(), RELIABILITY_SCHEMA, folder, "reliability")
    return folder


def expected_card(row: dict) -> dict:
    """What the page's JSON holds for a gallery row: probabilities in %, "unknown" for no original label."""
    probs = [None if math.isnan(p) else 100 * p for p in row["top_prob"]]
    return {"rank": row["rank"], "image_id": row["image_id"], "original": row["original"],
            "original_name": row["original_name"] if row["original"] >= 0 else "unknown", "valid": row["valid"],
            "valid_names": row["valid_names"], "top": row["top"], "top_names": row["top_names"], "top_prob": probs,
            "confidence": probs[0], "top1_valid": row["top"][0] in row["valid"]}  # fmt: skip


def test_cards_equal_the_gallery_rows(gallery_reports):
    page = build_dashboard(gallery_reports)
    g = embedded(page)["gallery"]
    assert g["datasets"] == ["alpha", "beta"]  # report order (dataset_stats), not the gallery's
    assert g["models"] == ["m2", "m1"]  # the gallery report's order: m2 is the default
    assert g["kinds"] == ["valid_label", "real_error"]
    expected: dict = {}
    for row in sorted(GALLERY, key=lambda r: r["rank"]):
        kinds = expected.setdefault(row["dataset"], {}).setdefault(row["model"], {"valid_label": [], "real_error": []})
        kinds[row["kind"]].append(expected_card(row))
    assert g["cards"] == expected
    a3 = g["cards"]["alpha"]["m2"]["real_error"][0]
    assert a3["top_names"][0] == "power drill" and a3["top_prob"][0] == pytest.approx(82.1) and not a3["top1_valid"]
    a5 = g["cards"]["alpha"]["m2"]["real_error"][1]
    assert a5["original"] == -1 and a5["original_name"] == "unknown"
    assert g["cards"]["alpha"]["m1"]["real_error"][0]["top_prob"] == [None] * 5  # no probabilities: n/a, no NaN
    assert all(c["top1_valid"] for m in ("m1", "m2") for c in g["cards"]["alpha"][m]["valid_label"])
    text = page.read_text(encoding="utf-8")
    assert ('<label for="gallery-dataset">dataset</label><select id="gallery-dataset"><option value="alpha" selected>'
            'alpha</option><option value="beta">beta</option></select>') in text  # fmt: skip
    assert ('<select id="gallery-model"><option value="m2" selected>m2</option><option value="m1">m1</option>'
            "</select>") in text  # fmt: skip
    # the section sits after the gap section and before the population section, and the header links to it
    order = [text.index(f'<section id="{s}">') for s in ("models", "gap", "mistakes", "population", "published")]
    assert order == sorted(order)
    assert '<a href="#mistakes">Confident mistakes</a>' in text
    for heading in ("Counted wrong by top-1, but the prediction is a valid label", "Confident real errors"):
        assert f"<h3>{heading} " in text


def test_each_thumbnail_is_embedded_once(gallery_reports):
    page = build_dashboard(gallery_reports)
    text = page.read_text(encoding="utf-8")
    g = embedded(page)["gallery"]
    for image in ("a1", "a2", "a3", "a4"):  # a1 is shown by both models, still once
        b64 = base64.b64encode(JPEGS[image]).decode("ascii")
        assert text.count(b64) == 1, image
        assert g["thumbs"]["alpha"][image] == {"src": f"data:image/jpeg;base64,{b64}", "width": 128, "height": 96}
    assert base64.b64encode(JPEGS["a9"]).decode("ascii") not in text  # no gallery row shows it
    assert set(g["thumbs"]["alpha"]) == {"a1", "a2", "a3", "a4", "a5"}
    assert g["thumbs"]["alpha"]["a5"] == {"note": BROKEN}  # one unreadable image: its own note on its card
    # a dataset none of whose images could be read: one note (the report's) instead of its images
    assert "beta" not in g["thumbs"] and g["notes"] == {"beta": UNREADABLE}
    assert text.count("data:image/jpeg;base64,") == 4
    assert "http:" not in json.dumps(g) and "https:" not in json.dumps(g)  # offline: nothing to fetch


def test_reliability_traces_equal_the_bins(gallery_reports):
    fig = embedded(build_dashboard(gallery_reports))["charts"]["reliability"]["figure"]
    rel = pd.DataFrame(reliability_rows())
    base, *traces = fig["data"]
    assert base["x"] == [0, 100] and base["y"] == [0, 100] and base["meta"] == "base"
    pairs = [("alpha", "m2"), ("alpha", "m1"), ("beta", "m2")]  # datasets in report order, models in gallery order
    assert [tuple(t["meta"]) for t in traces] == [p for p in pairs for _ in range(2)]
    assert [t["legendgroup"] for t in traces] == ["original", "valid set"] * 3
    for t in traces:
        d, m = t["meta"]
        rows = rel[(rel.dataset == d) & (rel.model == m) & (rel.truth == t["legendgroup"]) & (rel.n > 0)]
        rows = rows.sort_values("bin")
        assert len(rows) == 11  # the four empty bins are left out
        assert t["x"] == [100 * c for c in rows.confidence] and t["y"] == [100 * a for a in rows.accuracy]
        assert [c[0] for c in t["customdata"]] == rows.n.tolist()
        assert [c[1:] for c in t["customdata"]] == [[100 * lo, 100 * hi] for lo, hi in zip(rows.bin_low, rows.bin_high)]
        assert t["visible"] is ((d, m) == ("alpha", "m2"))  # the default pair only; the menus switch the others
    names = [t["name"] for t in traces]
    assert names[:4] == ["original label (top-1) · ECE 3.21 %", "valid set (ReaL) · ECE 1.23 %",
                         "original label (top-1)", "valid set (ReaL)"]  # fmt: skip
    layout = fig["layout"]
    assert layout["title"]["text"] == "Reliability of m2 on alpha"
    assert layout["xaxis"]["range"] == [0, 100] and layout["yaxis"]["range"] == [0, 100]


def test_reliability_without_probabilities_says_so(tmp_path):
    """Predictions without probabilities give a reliability report whose bins are all empty: the chart keeps its
    axes and the y = x line and says so, instead of an empty plot."""
    folder = tmp_path / "reports"
    empty = [{**row, "n": 0, "confidence": math.nan, "accuracy": math.nan} for row in reliability_rows()]
    write_table(empty, RELIABILITY_SCHEMA, folder, "reliability")
    fig = embedded(build_dashboard(folder))["charts"]["reliability"]["figure"]
    assert [len(t["x"]) for t in fig["data"]] == [2] + [0] * 6
    assert [a["text"] for a in fig["layout"]["annotations"]] == [
        "no reliability bin with images for this model on this dataset"
    ]


def test_absent_reports_are_notes(tmp_path):
    old = tmp_path / "old"  # a folder written before mlray wrote these reports
    write(HIST, old, "label_count_hist")
    page = build_dashboard(old)
    text, data = page.read_text(encoding="utf-8"), embedded(page)
    assert ('<section id="mistakes"><h2>Confident mistakes</h2>' in text and
            '<p class="note">Not shown: the confident mistakes: gallery.parquet is not in this report directory; '
            f"reliability.parquet is not in this report directory {WRITTEN_BY}.</p>") in text  # fmt: skip
    assert "gallery" not in data and "reliability" not in data["charts"] and "reliability" not in data["omitted"]

    no_rel = tmp_path / "no-reliability"
    write(HIST, no_rel, "label_count_hist")
    write_table(GALLERY, GALLERY_SCHEMA, no_rel, "gallery")
    write_table(thumbnail_rows(), THUMBNAIL_SCHEMA, no_rel, "thumbnails")
    data = embedded(build_dashboard(no_rel))
    assert data["omitted"]["reliability"] == f"reliability.parquet is not in this report directory {WRITTEN_BY}"
    assert data["gallery"]["cards"]["alpha"]["m2"]["valid_label"][0]["image_id"] == "a1"
    assert data["gallery"]["datasets"] == ["alpha", "beta"]  # report order (label_count_hist has gamma too)

    no_thumbs = tmp_path / "no-thumbnails"
    write_table(GALLERY, GALLERY_SCHEMA, no_thumbs, "gallery")
    g = embedded(build_dashboard(no_thumbs))["gallery"]
    note = f"thumbnails.parquet is not in this report directory {WRITTEN_BY}"
    assert g["thumbs"] == {} and g["notes"] == {"alpha": note, "beta": note} and g["cards"]

    no_gallery = tmp_path / "no-gallery"
    write_table(reliability_rows(), RELIABILITY_SCHEMA, no_gallery, "reliability")
    page = build_dashboard(no_gallery)
    data = embedded(page)
    assert (f'<p class="note">Not shown: gallery.parquet is not in this report directory {WRITTEN_BY}.</p>'
            in page.read_text(encoding="utf-8"))  # fmt: skip
    assert data["gallery"]["models"] == ["m2", "m1"] and data["gallery"]["cards"] == {}
    assert data["charts"]["reliability"]["figure"]["layout"]["title"]["text"] == "Reliability of m2 on alpha"

    empty = tmp_path / "empty-gallery"  # a run whose models made no confident mistake: no rows, not an error
    write_table([], GALLERY_SCHEMA, empty, "gallery")
    write_table(reliability_rows(), RELIABILITY_SCHEMA, empty, "reliability")
    assert '<p class="note">Not shown: gallery.parquet has no rows.</p>' in build_dashboard(empty).read_text()


def test_48_real_thumbnails_add_at_most_2_mb(tmp_path, capsys):
    """48 distinct thumbnails of real ImageNet val photos (longest side 128 px, as mlray.gallery writes them),
    shown by four models (96 cards): the page grows by at most 2 MB over the same page without the gallery."""
    from PIL import Image

    photos = sorted(shared("images-ilsvrc2012-val-original").glob("*.JPEG"))[:48]
    assert len(photos) == 48
    thumbs, rows = [], []
    for i, photo in enumerate(photos):
        with Image.open(photo) as img:
            img = img.convert("RGB")
            img.thumbnail((128, 128))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80, optimize=True)
        thumbs.append({"dataset": "alpha", "image_id": photo.stem, "jpeg": buf.getvalue(), "width": img.width,
                       "height": img.height, "note": None})  # fmt: skip
        for model in (f"model-{2 * (i % 2)}", f"model-{2 * (i % 2) + 1}"):  # each image on two models' cards
            kind = "valid_label" if i % 4 < 2 else "real_error"
            rank = 1 + i // 4
            rows.append(gallery_row(model, "alpha", kind, rank, photo.stem, 7, [7, 8], [8, 7, 740, 813, 9],
                                    [0.9 - 0.01 * rank, 0.05, 0.02, 0.02, 0.01]))  # fmt: skip
    without = tmp_path / "without"
    write(HIST, without, "label_count_hist")
    write(STATS, without, "dataset_stats")
    with_gallery = tmp_path / "with"
    write(HIST, with_gallery, "label_count_hist")
    write(STATS, with_gallery, "dataset_stats")
    write_table(rows, GALLERY_SCHEMA, with_gallery, "gallery")
    write_table(thumbs, THUMBNAIL_SCHEMA, with_gallery, "thumbnails")
    pairs = tuple((f"model-{k}", "alpha") for k in range(4))
    write_table(reliability_rows(pairs), RELIABILITY_SCHEMA, with_gallery, "reliability")
    small, big = build_dashboard(without), build_dashboard(with_gallery)
    text = big.read_text(encoding="utf-8")
    assert text.count("data:image/jpeg;base64,") == 48
    for t in thumbs:
        assert text.count(base64.b64encode(t["jpeg"]).decode("ascii")) == 1
    jpeg_bytes = sum(len(t["jpeg"]) for t in thumbs)
    added = big.stat().st_size - small.stat().st_size
    with capsys.disabled():
        print(
            f"\n48 thumbnails ({jpeg_bytes / 1024:.0f} KiB of JPEG, 96 cards, 4 reliability diagrams): page "
            f"{small.stat().st_size / 1e6:.3f} MB -> {big.stat().st_size / 1e6:.3f} MB, +{added / 1e3:.0f} kB"
        )
    assert added <= 2_000_000


def test_gallery_in_headless_chromium(gallery_reports):
    page = build_dashboard(gallery_reports)
    driver = _browser()  # skips (or fails under MLRAY_REQUIRE_BROWSER=1) before selenium is imported below
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def chosen(dataset: str, model: str) -> None:
        Select(driver.find_element(By.ID, "gallery-dataset")).select_by_value(dataset)
        Select(driver.find_element(By.ID, "gallery-model")).select_by_value(model)
        try:
            WebDriverWait(driver, 20).until(
                lambda d: (
                    d.execute_script("return document.body.dataset.gallery")
                    == json.dumps([dataset, model], separators=(",", ":"))
                )
            )
        except TimeoutException:
            pytest.fail(f"the gallery did not switch to {dataset} / {model}; console: {driver.get_log('browser')}")

    cards_js = ("return Array.from(document.querySelectorAll('#gallery-' + arguments[0] + ' .mcard')).map(c => ["
                "c.dataset.imageId, c.querySelector('img') ? [c.querySelector('img').complete, "
                "c.querySelector('img').naturalWidth] : c.querySelector('.thumb') && "
                "c.querySelector('.thumb').textContent, c.querySelector('li.first').className, "
                "Array.from(c.querySelectorAll('li')).map(li => li.textContent)])")  # fmt: skip
    loaded = ("return Array.from(document.querySelectorAll('#gallery img'))"
              ".every(i => i.complete && i.naturalWidth > 0)")  # fmt: skip
    shown = ("const c = document.getElementById('reliability'); return [c.data.filter(t => t.visible !== false)"
             ".map(t => t.meta), c.layout.title.text, (c.layout.annotations || []).map(a => a.text), "
             "c.querySelectorAll('.scatterlayer .trace').length]")  # fmt: skip
    try:
        driver.get(page.resolve().as_uri())
        try:
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.gallery"))
        except TimeoutException:
            pytest.fail(f"the gallery did not render in 60 s; browser console: {driver.get_log('browser')}")
        assert driver.execute_script("return document.body.dataset.gallery") == '["alpha","m2"]'  # the defaults
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(loaded))
        valid = driver.execute_script(cards_js, "valid_label")
        assert [c[0] for c in valid] == ["a1", "a2"] and all(c[1] == [True, 128] for c in valid)
        assert all(c[2] == "valid first ok" for c in valid)  # the top-1 is a valid label: green
        assert valid[0][3][:2] == ["tiger shark90.0 %", "great white shark5.0 %"]  # name, then probability
        errors = driver.execute_script(cards_js, "real_error")
        assert [c[0] for c in errors] == ["a3", "a5"]
        assert errors[0][1] == [True, 128] and errors[1][1] == BROKEN  # a5's note instead of its image
        assert all(c[2] == "first bad" for c in errors)  # the top-1 is no valid label: red
        assert errors[0][3] == ["power drill82.1 %", "cock10.0 %", "hen5.0 %", "ostrich2.0 %", "spatula0.9 %"]
        assert driver.find_element(By.ID, "gallery-valid_label-count").text == "2 images"
        metas, title, notes, drawn = driver.execute_script(shown)
        assert metas == ["base", ["alpha", "m2"], ["alpha", "m2"]] and title == "Reliability of m2 on alpha"
        assert notes == [] and drawn >= 3

        chosen("alpha", "m1")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(loaded))
        valid = driver.execute_script(cards_js, "valid_label")
        assert [c[0] for c in valid] == ["a1"] and valid[0][1] == [True, 128]  # the same thumbnail, embedded once
        errors = driver.execute_script(cards_js, "real_error")
        assert errors[0][3][0] == "stingrayn/a"  # no probability: n/a
        metas, title, notes, _ = driver.execute_script(shown)
        assert metas == ["base", ["alpha", "m1"], ["alpha", "m1"]] and title == "Reliability of m1 on alpha"

        chosen("beta", "m2")  # no thumbnail of beta could be read: the report's note, cards without images
        note = driver.find_element(By.ID, "gallery-note")
        assert note.is_displayed() and note.text == f"Images not shown: {UNREADABLE}."
        assert driver.execute_script("return document.querySelectorAll('#gallery img').length") == 0
        assert [c[0] for c in driver.execute_script(cards_js, "valid_label")] == ["b1"]

        chosen("beta", "m1")  # no gallery rows and no reliability bins for this pair
        assert driver.find_element(By.ID, "gallery-real_error").text == "No image of this kind for m1 on beta."
        metas, title, notes, _ = driver.execute_script(shown)
        assert metas == ["base"] and notes == ["no reliability bin with images for this model on this dataset"]

        chosen("alpha", "m2")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(loaded))
        assert not driver.find_element(By.ID, "gallery-note").is_displayed()
        ARTIFACTS.mkdir(exist_ok=True)
        section = driver.find_element(By.ID, "mistakes")
        height = driver.execute_script("return document.getElementById('mistakes').getBoundingClientRect().height")
        driver.set_window_size(1440, int(height) + 200)
        driver.execute_script("document.getElementById('mistakes').scrollIntoView()")
        assert section.screenshot(str(ARTIFACTS / "gallery.png"))
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
