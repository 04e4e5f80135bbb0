"""mlray/console.py: exit codes, one-line errors (Ray's included), interrupt messages, progress and summaries."""

from __future__ import annotations

import doctest
import io
import os

import pandas as pd
import pytest
from rich.console import Console

import mlray.console as mc
from mlray.console import (
    InferenceProgress,
    gap_cell,
    interrupt_message,
    make_console,
    print_headline,
    resumable,
    run_guarded,
)
from mlray.errors import MlrayError

LONG = "vit_large_patch14_clip_336.openai_ft_in12k_in1k_with_a_long_suffix"


def test_doctests_of_the_console():
    assert doctest.testmod(mc, raise_on_error=False).failed == 0


def headline_frame(model: str) -> pd.DataFrame:
    rows = []
    for metric in mc.HEADLINE_METRICS:
        rows.append({"model": model, "dataset": "imagenet-val", "metric": metric, "value": 0.5, "available": True})
    return pd.DataFrame(rows)


def test_output_is_not_folded_when_stdout_is_not_a_terminal(capsys):
    out = make_console()  # capsys: stdout is a pipe, as in CI logs or `| tee`
    assert not out.is_terminal and out.width == mc.NON_TERMINAL_WIDTH
    print_headline(headline_frame(LONG), out)
    text = capsys.readouterr().out
    assert LONG in text  # full model names, one per line (a terminal-width console folded them at 80 columns)
    assert "\x1b[" not in text  # no colour codes in logs


def test_exit_codes_and_one_line_errors(capsys):
    assert run_guarded(lambda: None) == 0

    def bad_input():
        raise MlrayError("cfg.yaml: datasets[0].colour: unknown key")

    assert run_guarded(bad_input) == 2
    assert capsys.readouterr().err == "mlray: error: cfg.yaml: datasets[0].colour: unknown key\n"

    def usage():
        raise SystemExit(2)

    assert run_guarded(usage) == 2

    def bug():
        raise ZeroDivisionError("division by zero")

    assert run_guarded(bug) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_user_error_raised_inside_a_ray_task_is_one_line():
    from ray.exceptions import RayTaskError

    cause = MlrayError("labels.csv: row 3: class index 1000 is outside 0..999")
    wrapped = RayTaskError("_summarize_dataset", "Traceback (most recent call last):\n  File ...\n", cause)
    dual = wrapped.as_instanceof_cause()  # what ray.get raises: a RayTaskError that is also an MlrayError
    assert isinstance(dual, MlrayError) and "\n" in str(dual)
    err = io.StringIO()

    def fails():
        raise dual

    saved = mc.err_console
    mc.err_console = Console(file=err, width=1000)
    try:
        assert run_guarded(fails) == 2
    finally:
        mc.err_console = saved
    assert err.getvalue() == "mlray: error: labels.csv: row 3: class index 1000 is outside 0..999\n"


def test_interrupt_says_what_is_stored_and_how_to_resume(tmp_path, capsys):
    store = tmp_path / "out" / "predictions"
    for rel in ("d/m/part-s00000-aa.parquet", "d/m/part-s00001-bb.parquet", "e/m/part-s00000-cc.parquet",
                "d/m/.part-s00002-dd.parquet.tmp-1"):  # fmt: skip
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(b"x")
    assert interrupt_message() == "mlray: interrupted"

    def interrupted():
        raise KeyboardInterrupt

    with resumable(store, "mlray evaluate run.yaml --out out"):
        assert run_guarded(interrupted) == 130
    assert capsys.readouterr().err == (
        f"mlray: interrupted: 3 finished shard parts stored in {store} (each complete); run mlray evaluate "
        "run.yaml --out out again to resume: stored shards are reused, not inferred again\n"
    )
    assert interrupt_message() == "mlray: interrupted"  # the hint ends with its block


def test_progress_lines_show_steady_rate_and_eta_without_start_up():
    buf = io.StringIO()
    progress = InferenceProgress(out=Console(file=buf, width=1000), live=False, interval=10.0)
    progress.begin(" (pass 1/1)", {"val": 100}, {"lite0": 100})
    progress.update({"val": 0}, {"lite0": 0}, now=100.0)  # start-up: nothing yet
    progress.update({"val": 0}, {"lite0": 10}, now=105.0)  # first batch out at 105 s
    progress.update({"val": 0}, {"lite0": 50}, now=107.0)  # 40 images in 2 s after it: 20 img/s
    assert progress.steady_rates() == {"lite0": 20.0}
    assert buf.getvalue() == ""  # nothing printed before the interval
    progress.update({"val": 0}, {"lite0": 90}, now=115.5)  # 80 in 10.5 s; 10 left
    progress.update({"val": 100}, {"lite0": 100}, now=116.0)
    progress.end()
    assert buf.getvalue().splitlines() == [
        "val: written to the store (pass 1/1): 0/100 images (0 %), starting, ETA -",
        "lite0 (pass 1/1): 90/100 images (90 %), 7.6 img/s steady, ETA 0:01",
        "val: written to the store (pass 1/1): 100/100 images (100 %), -, done",
        "lite0 (pass 1/1): 100/100 images (100 %), 8.2 img/s steady, done",
    ]


def test_live_progress_prints_native_stderr_above_the_display_not_through_it():
    buf = io.StringIO()
    out = Console(file=buf, width=200, force_terminal=True, color_system=None)
    progress = InferenceProgress(out=out, live=True)
    progress.begin("", {"val": 10}, {"lite0": 10})
    os.write(2, b"[2026-12-02 12:00:00,000 E 1 1] core_worker.cc:1: max_restarts > 0\n")  # as Ray's C++ core does
    progress.update({"val": 4}, {"lite0": 4}, now=1.0)
    progress.update({"val": 10}, {"lite0": 10}, now=2.0)
    progress.end()
    text = buf.getvalue()
    assert "core_worker.cc:1: max_restarts > 0" in text  # routed through the console
    assert "lite0" in text and "10/10" in text


@pytest.mark.parametrize(
    "row, cell",
    [
        ({"gap": 0.1052, "composition": 0.0884, "reason": ""}, "+10.52 (84 % mix)"),
        ({"gap": -0.00001, "composition": 0.0, "reason": ""}, "+0.00 (gap < 1 pt)"),
        (
            {"gap": float("nan"), "composition": float("nan"), "reason": "no subgroup in both datasets"},
            "n/a (no subgroup in both datasets)",
        ),  # fmt: skip
        ({"gap": 0.2, "composition": float("nan"), "reason": ""}, "+20.00 (mix n/a)"),
        ({"gap": -0.05, "composition": 0.00001, "reason": ""}, "-5.00 (0 % mix)"),
    ],
)
def test_gap_cells_give_a_reason_and_never_minus_zero(row, cell):
    assert gap_cell(pd.Series(row)) == cell
