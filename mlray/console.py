"""The one console of mlray: what the ``mlray`` command and the ``jobs/`` entrypoints print, and how they exit.

- :func:`make_console`: a rich console that never folds lines when the output is not a terminal (CI logs,
  ``| tee``, ``ray job logs``): full model names, no colour codes.
- :func:`run_guarded`: runs a command and turns its outcome into the exit status: 0 success; 2 a user-input
  error (:class:`~mlray.errors.MlrayError`, also when raised inside a Ray task) printed as one line
  ``mlray: error: ...`` with no traceback; 130 an interrupt (Ctrl-C), printed with what is stored and how to resume;
  1 anything else, with its traceback.
- :class:`InferenceProgress`: live progress of an inference run, per dataset (images written to the store) and
  per model (images inferred, updated per batch), with the steady images/s (start-up excluded) and an ETA. On a
  terminal it is a rich live display, and whatever Ray's C++ core writes to the process's stderr meanwhile is
  printed above it instead of through it; elsewhere it prints a line per task every ``interval`` seconds.
- The summary printers (:func:`print_stats`, :func:`print_scores`, :func:`print_inference`,
  :func:`print_demo_summary`, :func:`print_published_gaps`, :func:`print_demo_story`): one formatting of each
  report for every command and job.

Only presentation lives here: every number printed is read from a result or report the library produced.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import MlrayError
from .scoring.params import MIN_GAP_FOR_SHARE

NON_TERMINAL_WIDTH = 1000  # columns when stdout is not a terminal: long lines and tables are never folded
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def make_console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); not folded at 80 columns when the stream is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if terminal else NON_TERMINAL_WIDTH, soft_wrap=not terminal)


console = make_console()
err_console = make_console(stderr=True)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 model``, ``3 models``, ``1,024 images``.

    >>> plural(1, "model"), plural(3, "model"), plural(1024, "image"), plural(2, "class", "classes")
    ('1 model', '3 models', '1,024 images', '2 classes')
    """
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def pct(v: float | None, digits: int = 2) -> str:
    """A fraction as a percentage; ``-`` for a missing value; never ``-0``.

    >>> pct(0.15891), pct(float("nan")), pct(-0.00001, 0)
    ('15.89 %', '-', '0 %')
    """
    if v is None or v != v:
        return "-"
    return f"{round(100 * v, digits) + 0.0:.{digits}f} %"


def points(v: float | None, digits: int = 2) -> str:
    """A difference of fractions in percentage points with its sign; ``n/a`` when missing; never ``-0.00``.

    >>> points(0.1052), points(-0.00001), points(float("nan"))
    ('+10.52', '+0.00', 'n/a')
    """
    if v is None or v != v:
        return "n/a"
    return f"{round(100 * v, digits) + 0.0:+.{digits}f}"


# --------------------------------------------------------------------------------------------------------------
# Exit codes, errors and interrupts


def user_error(exc: BaseException) -> MlrayError | None:
    """The user-input error behind ``exc``: itself, or the cause of a Ray task error (any depth); else None."""
    seen = 0
    while exc is not None and seen < 8:
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError / RayActorError carry the original
        if isinstance(cause, BaseException) and cause is not exc:
            exc = cause
            seen += 1
            continue
        if isinstance(exc, MlrayError):
            # a RayTaskError(MlrayError) is an MlrayError too, but its text is Ray's traceback: keep the first line
            return exc if "\n" not in str(exc) else MlrayError(str(exc).strip().splitlines()[-1])
        return None
    return None


@dataclass
class _InterruptHint:
    """What an interrupted command says: the store it was writing to (``None`` = nothing to resume)."""

    store: Path | None = None
    command: str = "the same command"
    shown: str | None = None  # how to name the store (an object-store URI); default: the local path


_hint = _InterruptHint()


@contextmanager
def resumable(store: str | os.PathLike, command: str = "the same command", shown: str | None = None) -> Iterator[None]:
    """Within this block an interrupt reports the prediction parts in ``store`` (named ``shown``, e.g. the URI
    the parts were uploaded to, when given) and that ``command`` resumes."""
    global _hint
    previous = _hint
    _hint = _InterruptHint(Path(store), command, shown)
    yield  # on an exception the hint stays set: the top-level handler reports the interrupt after unwinding
    _hint = previous


def count_stored_parts(store: Path) -> int:
    """Finished (dataset, model, shard) parts in a prediction store folder (temporary names not counted)."""
    if not store.is_dir():
        return 0
    return sum(1 for p in store.rglob("part-*.parquet") if not p.name.startswith("."))


def interrupt_message() -> str:
    """The line printed on Ctrl-C / SIGTERM: what is safely stored and how to resume."""
    if _hint.store is None:
        return "mlray: interrupted"
    n = count_stored_parts(_hint.store)
    return (
        f"mlray: interrupted: {plural(n, 'finished shard part')} stored in {_hint.shown or _hint.store} "
        "(each complete); "
        f"run {_hint.command} again to resume: stored shards are reused, not inferred again"
    )


def run_guarded(fn: Callable[[], Any], traceback_for_unknown: bool = True) -> int:
    """Run ``fn`` and return the exit status (see the module docstring); errors go to stderr as one line."""
    try:
        fn()
    except KeyboardInterrupt:
        err_console.print(interrupt_message(), markup=False, highlight=False)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse / typer: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    except BaseException as exc:
        err = user_error(exc)
        if err is not None:
            err_console.print(f"mlray: error: {err}", markup=False, highlight=False)
            return EXIT_USAGE
        if traceback_for_unknown:
            traceback.print_exc()
        else:
            err_console.print(f"mlray: failed: {type(exc).__name__}: {exc}", markup=False, highlight=False)
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------
# Progress of an inference run


@dataclass
class _Rate:
    """Steady throughput of one counter: measured from its first non-zero reading (start-up excluded)."""

    total: int
    t0: float | None = None
    n0: int = 0
    n: int = 0
    t: float = 0.0
    finished_at: float | None = None

    def add(self, n: int, now: float) -> None:
        if self.t0 is None and n > 0:
            self.t0, self.n0 = now, n
        self.n, self.t = n, now
        if self.finished_at is None and self.total and n >= self.total:
            self.finished_at = now

    @property
    def per_second(self) -> float | None:
        if self.t0 is None or self.t <= self.t0 or self.n <= self.n0:
            return None
        return (self.n - self.n0) / (self.t - self.t0)

    @property
    def eta(self) -> float | None:
        rate = self.per_second
        if self.total and self.n >= self.total:
            return 0.0
        return None if not rate else (self.total - self.n) / rate

    def rate_text(self) -> str:
        rate = self.per_second
        if rate is None:
            return "-" if self.finished_at is not None else "starting"
        return f"{rate:,.1f} img/s steady"

    def eta_text(self) -> str:
        eta = self.eta
        if eta is None:
            return "ETA -"
        if eta == 0:
            return "done"
        return f"ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass
class InferenceProgress:
    """Live progress of :func:`mlray.inference.run_inference` (the ``ProgressSink`` protocol it calls).

    ``live`` (default: stdout is a terminal) chooses the rich live display; otherwise a plain line per task is
    printed every ``interval`` seconds and when the task finishes (readable in ``ray job logs``).
    """

    out: Console = field(default_factory=lambda: console)
    live: bool | None = None
    interval: float = 30.0
    _progress: Progress | None = None
    _tasks: dict[str, TaskID] = field(default_factory=dict)
    _rates: dict[str, _Rate] = field(default_factory=dict)
    _printed: dict[str, float | None] = field(default_factory=dict)
    _label: str = ""
    _descriptions: dict[str, str] = field(default_factory=dict)
    _capture: _NativeStderr | None = None

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = self.out.is_terminal

    def begin(self, label: str, stored_totals: dict[str, int], model_totals: dict[str, int]) -> None:
        """A pass starts: ``stored_totals`` images to write per dataset, ``model_totals`` to infer per model."""
        self.end()
        self._label = label
        self._rates, self._tasks, self._printed, self._descriptions = {}, {}, {}, {}
        keys = [(f"d:{d}", f"{d}: written to the store{label}", n) for d, n in stored_totals.items()]
        keys += [(f"m:{m}", f"{m}{label}", n) for m, n in model_totals.items()]
        for key, _, n in keys:
            self._rates[key] = _Rate(total=int(n))
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self.out,
                transient=False,
            )
            for key, description, n in keys:
                self._tasks[key] = self._progress.add_task(description, total=n, rate="starting", eta="ETA -")
            self._capture = _NativeStderr(self.out)
            self._capture.start()
            self._progress.start()
        else:
            for key, description, _ in keys:
                self._printed[key] = None
                self._descriptions[key] = description

    def update(self, stored: dict[str, int], inferred: dict[str, int], now: float | None = None) -> None:
        """Cumulative counts of this pass: images written per dataset, images inferred per model."""
        now = time.monotonic() if now is None else now
        for prefix, counts in (("d:", stored), ("m:", inferred)):
            for name, n in counts.items():
                key = prefix + name
                rate = self._rates.get(key)
                if rate is None:
                    continue
                rate.add(int(n), now)
                if self._progress is not None:
                    self._progress.update(
                        self._tasks[key], completed=rate.n, rate=rate.rate_text(), eta=rate.eta_text()
                    )
                else:
                    self._log(key, rate, now)

    def _log(self, key: str, rate: _Rate, now: float) -> None:
        if key not in self._printed:
            return  # finished and printed
        last = self._printed[key]
        if last is None:  # the first reading starts the task's clock
            self._printed[key] = last = now
        finished = rate.finished_at is not None
        if finished or now - last >= self.interval:
            share = f" ({100 * rate.n / rate.total:.0f} %)" if rate.total else ""
            self.out.print(
                f"{self._descriptions[key]}: {rate.n:,}/{rate.total:,} images{share}, "
                f"{rate.rate_text()}, {rate.eta_text()}",
                markup=False,
                highlight=False,
            )
            if finished:
                del self._printed[key]
            else:
                self._printed[key] = now

    def note(self, text: str) -> None:
        """One line for the user (e.g. what a resumed run reused), printed above the live display."""
        self.out.print(text, markup=False, highlight=False)

    def end(self) -> None:
        """The pass has drained (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._capture is not None:
            self._capture.stop()
            self._capture = None

    def steady_rates(self) -> dict[str, float | None]:
        """The steady images/s of each model of the last pass (as displayed)."""
        return {k[2:]: r.per_second for k, r in self._rates.items() if k.startswith("m:")}


class _NativeStderr:
    """Routes the process's file descriptor 2 through the console while a live display runs.

    Ray's C++ core worker logs straight to fd 2 (e.g. ``core_worker.cc ... max_restarts > 0``), which would land
    inside a live display; its lines are read from a pipe and printed above the display instead.
    """

    def __init__(self, out: Console) -> None:
        self.out = out
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self._read_fd: int | None = None

    def start(self) -> None:
        try:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self._saved = os.dup(2)
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except OSError:
            self._saved = None
            return
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._pump, name="mlray-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._read_fd is not None
        with os.fdopen(self._read_fd, "r", errors="replace") as pipe:
            for line in pipe:
                text = line.rstrip("\n")
                if text:
                    self.out.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump sees EOF
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


# --------------------------------------------------------------------------------------------------------------
# Summaries


def print_stats(result: Any, out: Console | None = None) -> None:
    """Label statistics: one column per dataset, the label-count histograms, then one table per dataset pair."""
    out = out or console
    table = Table(title="Label statistics (fractions of labelled images)", title_justify="left")
    table.add_column("")
    for s in result.summaries:
        table.add_column(s.name, justify="right")
    st = [s.stats for s in result.summaries]
    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("images", lambda x: f"{x['n_images']:,}"),
        ("labelled", lambda x: f"{x['n_labelled']:,}"),
        ("empty (no valid class)", lambda x: f"{x['n_empty']:,}"),
        ("not annotated", lambda x: f"{x['n_unannotated']:,}"),
        ("multi-label (>= 2)", lambda x: f"{x['n_multi']:,}"),
        ("multi-label share", lambda x: pct(x["multi_fraction"])),
        ("mean valid labels", lambda x: "-" if x["mean_labels"] != x["mean_labels"] else f"{x['mean_labels']:.3f}"),
        ("original label in valid set", lambda x: pct(x["original_in_valid_fraction"])),
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(x) for x in st))
    out.print(table)
    for s in result.summaries:
        hist = ", ".join(f"{k}: {v}" for k, v in zip(s.hist["n_labels"], s.hist["n_images"]))
        out.print(f"[bold]{s.name}[/] images by number of valid labels: {{{hist}}}", soft_wrap=True)
        if s.stats.get("n_skipped_unknown"):
            out.print(f"  {plural(s.stats['n_skipped_unknown'], 'label entry', 'label entries')} named images "
                      "outside the dataset (skipped)")  # fmt: skip
        if s.stats.get("n_merged_duplicate_labels"):
            n = s.stats["n_merged_duplicate_labels"]
            out.print(f"  {plural(n, 'label set')} named a class twice (kept once)")
    comp = result.comparison
    if comp is None or not len(comp):
        return
    for (da, db), rows_ in comp.groupby(["dataset_a", "dataset_b"], sort=False):
        m = rows_[rows_["measure"] != "class_multi_rate_difference"].set_index("measure")
        ctable = Table(title=f"{da} vs {db}", title_justify="left")
        ctable.add_column("measure")
        ctable.add_column("value", justify="right")
        for measure, r in m.iterrows():
            ci = "" if r["ci_low"] != r["ci_low"] else f"  (95 % CI {r['ci_low']:+.4f}, {r['ci_high']:+.4f})"
            ctable.add_row(str(measure), f"{r['value']:.4g}{ci}")
        top = rows_[rows_["measure"] == "class_multi_rate_difference"].head(3)
        if len(top):
            ctable.add_row(
                "multi-label rate differs most", "; ".join(f"{r.name} {r.value:+.2f}" for r in top.itertuples())
            )
        out.print(ctable)


def stats_lines(stats_result: Any) -> list[str]:
    """One line per dataset (images, labelled, multi-label share, mean valid labels) and per pair: for job logs."""
    out: list[str] = []
    for s in stats_result.summaries:
        st = s.stats
        share, mean = st["multi_fraction"], st["mean_labels"]
        out.append(
            f"{s.name}: {plural(st['n_images'], 'image')}, {st['n_labelled']:,} labelled, "
            f"{st['n_multi']:,} multi-label ({'-' if share != share else f'{100 * share:.2f} %'} of labelled), "
            f"mean {'-' if mean != mean else f'{mean:.3f}'} valid labels"
        )
    comp = stats_result.comparison
    if comp is not None and len(comp):
        for (da, db), rows in comp.groupby(["dataset_a", "dataset_b"], sort=False):
            m = rows.set_index("measure")["value"]
            if "multi_fraction_difference" in m.index:
                out.append(
                    f"{da} vs {db}: multi-label share difference {points(m['multi_fraction_difference'])} points, "
                    f"label-count total variation {m['label_count_total_variation']:.4f}"
                )
    return out


def inference_lines(inference: Any, datasets: Sequence[str]) -> list[str]:
    """One line per dataset: images x models = predictions + errors, and what was inferred or reused."""
    lines = []
    for dataset in datasets:
        counts = [c for (d, _), c in inference.counts.items() if d == dataset]
        n_images = counts[0]["images"] if counts else 0
        n_pred = sum(c["predictions"] for c in counts)
        n_err = sum(c["errors"] for c in counts)
        seconds = inference.seconds.get(dataset, 0.0)
        done = inference.images_processed.get(dataset, 0)
        lines.append(
            f"{dataset}: {plural(n_images, 'image')} x {plural(len(counts), 'model')} = "
            f"{plural(n_pred, 'prediction')} + {plural(n_err, 'error')}; "
            + (
                f"{plural(done, 'image')} inferred, done {seconds:.1f} s into the run"
                if done
                else "all reused from the store"
            )
        )
    return lines


HEADLINE_METRICS = ("top1", "real_top1", "vtopk_all", "vtopk_frac", "asma_vtopk_all")
GAP_TABLE_METRICS = ("top1", "real_top1", "vtopk_all")


def print_headline(model_metrics: Any, out: Console | None = None, limit: int | None = None) -> None:
    """Headline metrics (%) per (model, dataset); at most ``limit`` rows, then a count of the rest."""
    out = out or console
    if model_metrics is None or not len(model_metrics):
        out.print("(no model metrics)")
        return
    table = Table(title="Headline metrics (%; CIs in model_metrics.parquet)", title_justify="left")
    for col in ("model", "dataset", *HEADLINE_METRICS):
        table.add_column(col, justify="left" if col in ("model", "dataset") else "right", no_wrap=True)
    groups = list(model_metrics.groupby(["model", "dataset"], sort=False))
    for (model, dataset), rows in groups[:limit]:
        m = rows.set_index("metric")
        cells = []
        for metric in HEADLINE_METRICS:
            if metric not in m.index or not bool(m.loc[metric, "available"]):
                cells.append("n/a")
            else:
                cells.append(f"{100 * float(m.loc[metric, 'value']):.2f}")
        table.add_row(str(model), str(dataset), *cells)
    out.print(table)
    if limit is not None and len(groups) > limit:
        out.print(f"... and {plural(len(groups) - limit, '(model, dataset) pair')} more in model_metrics.parquet")


def print_confidence(model_metrics: Any, out: Console | None = None, limit: int | None = None) -> None:
    """Per (model, dataset): the top-1 "mistakes" that are valid labels (all, and the confident ones, as share and
    count) and the calibration error against both truths; nothing when the report has no confidence rows."""
    out = out or console
    if model_metrics is None or not len(model_metrics):
        return
    conf = model_metrics[model_metrics.metric.str.startswith(("penalized_valid_share", "ece_"))]
    if not len(conf):
        return
    confident = sorted({m for m in conf.metric if m.startswith("penalized_valid_share_conf")})
    names = ["penalized_valid_share", *confident[:1], "ece_top1", "ece_real"]
    table = Table(title="Top-1 mistakes that are valid labels, and calibration (ECE, %)", title_justify="left")
    at = [f"conf >= {c.removeprefix('penalized_valid_share_conf')} %" for c in confident[:1]]
    for col in ("model", "dataset", "valid among mistakes", *at, "ECE original", "ECE valid set"):
        table.add_column(col, justify="left" if col in ("model", "dataset") else "right", no_wrap=True)
    groups = list(conf.groupby(["model", "dataset"], sort=False))
    for (model, dataset), rows in groups[:limit]:
        m = rows.set_index("metric")
        cells = []
        for metric in names:
            if metric not in m.index or not bool(m.loc[metric, "available"]):
                cells.append("n/a")
            elif metric.startswith("penalized"):
                v, n = float(m.loc[metric, "value"]), int(m.loc[metric, "n"])
                cells.append(f"{100 * v:.1f} % of {n:,}")
            else:
                cells.append(f"{100 * float(m.loc[metric, 'value']):.2f}")
        table.add_row(str(model), str(dataset), *cells)
    out.print(table)


def gap_cell(row: Any) -> str:
    """One gap-table cell: the gap A -> B in points and the share the label-count mix explains, with reasons.

    ``row`` has ``gap``, ``composition`` and ``reason`` (a ``gap_decomposition.parquet`` row).
    """
    gap, comp = float(row["gap"]), float(row["composition"])
    if gap != gap:
        reason = str(row.get("reason") or "").strip()
        return f"n/a ({reason})" if reason else "n/a"
    if abs(gap) < MIN_GAP_FOR_SHARE:
        return f"{points(gap)} (gap < 1 pt)"
    if comp != comp:
        return f"{points(gap)} (mix n/a)"
    return f"{points(gap)} ({pct(comp / gap, 0)} mix)"


def print_scores(
    result: Any, dataset_order: Sequence[str], out: Console | None = None, limit: int | None = None
) -> None:
    """Headline metrics, then per dataset pair each model's gap A -> B and the share explained by the mix."""
    out = out or console
    mm = result.frames["model_metrics"]
    print_headline(mm, out, limit)
    print_confidence(mm, out, limit)
    gd = result.frames["gap_decomposition"]
    if len(gd):
        order = {name: i for i, name in enumerate(dataset_order)}
        keep = [order.get(a, 0) < order.get(b, 0) for a, b in zip(gd.dataset_a, gd.dataset_b)]
        forward = gd[keep]
        for (da, db), rows in forward.groupby(["dataset_a", "dataset_b"], sort=False):
            t = Table(
                title=f"Gap {da} -> {db} in points over labelled images (share explained by the label-count mix)",
                title_justify="left",
            )
            t.add_column("model", no_wrap=True)
            for metric in GAP_TABLE_METRICS:
                t.add_column(metric, justify="right", no_wrap=True)
            t.add_column("asma_vtopk_all", justify="right", no_wrap=True)
            for model, mrows in list(rows.groupby("model", sort=False))[:limit]:
                m = mrows.set_index("metric")
                cells = [gap_cell(m.loc[metric]) if metric in m.index else "n/a" for metric in GAP_TABLE_METRICS]
                am = mm[(mm.model == model) & (mm.metric == "asma_vtopk_all") & mm.available]
                am = am.set_index("dataset")["value"]
                cells.append(points(am[da] - am[db]) if da in am and db in am else "n/a")
                t.add_row(str(model), *cells)
            out.print(t)
            out.print(
                "  top-1 here counts labelled images only (the gap decomposition needs valid-label counts); "
                "model_metrics.parquet holds top-1 over every image with an original label",
                style="dim",
            )
    for (dataset, model), (n_missing, examples) in result.missing.items():
        if n_missing:
            out.print(
                f"[yellow]{model} on {dataset}: {plural(n_missing, 'image')} have no prediction (excluded), "
                f"e.g. {', '.join(examples)}[/]"
            )


def print_inference(inference: Any, out: Console | None = None, limit: int | None = None) -> None:
    """Per (dataset, model): images = predictions + errors; what was reused; then the run's throughput."""
    out = out or console
    items = list(inference.counts.items())
    for (dataset, model), c in items[:limit]:
        out.print(
            f"{dataset} / {model}: {c['images']:,} images = {c['predictions']:,} predictions + {c['errors']:,} errors",
            markup=False,
            highlight=False,
        )
    if limit is not None and len(items) > limit:
        out.print(f"... and {plural(len(items) - limit, '(dataset, model) pair')} more in run_manifest.json")
    reused = getattr(inference, "reused_shards", None) or {}
    n_reused = sum(reused.values())
    if n_reused:
        out.print(f"reused from the store: {plural(n_reused, 'finished shard part')} (not inferred again)")
    n = sum(inference.images_processed.values())
    models = len({m for _, m in inference.counts})
    seconds = inference.total_seconds
    out.print(
        f"{n:,} images inferred by {plural(models, 'model')} in {seconds:.1f} s"
        + (f" ({n / seconds:.1f} img/s, start-up included)" if n and seconds else " (all reused from the store)")
    )


def print_published_gaps(summary: Any, out: Console | None = None) -> None:
    """The published ImageNet val -> ImageNetV2 MatchedFrequency top-1 gap per collection (points)."""
    out = out or console
    table = Table(
        title="ImageNet val -> ImageNetV2 MatchedFrequency top-1 gap across models (points)", title_justify="left"
    )
    for col in ("collection", "models", "mean", "median", "std", "min", "p10", "p90", "max"):
        table.add_column(col, justify="left" if col == "collection" else "right")
    for r in summary.itertuples():
        table.add_row(
            r.collection,
            f"{r.count:,}",
            *(f"{100 * getattr(r, c):.2f}" for c in ("mean", "median", "std", "min", "p10", "p90", "max")),
        )
    out.print(table)


def print_demo_summary(summary: Any, out: Console | None = None) -> None:
    """The demo's per-model tables: top-1 vs variable top-k on both sets, then the single -> multi gap split."""
    out = out or console

    def pts(v: float) -> str:
        return "n/a" if v != v else f"{round(100 * v, 1) + 0.0:+.1f}"

    table = Table(title="Demo (%): S = single-object set, M = multi-object PatchML set", title_justify="left")
    cols = {"top1_single": "top-1 S", "top1_multi": "top-1 M", "vtopk_all_single": "var. top-k S",
            "vtopk_all_multi": "var. top-k M", "real_top1_single": "ReaL S", "real_top1_multi": "ReaL M"}  # fmt: skip
    table.add_column("model", no_wrap=True)
    for label in cols.values():
        table.add_column(label, justify="right")
    for _, r in summary.iterrows():
        table.add_row(r["model"], *("n/a" if r[c] != r[c] else f"{100 * r[c]:.1f}" for c in cols))
    out.print(table)
    gaps = Table(title="Gap S -> M (points) = composition (label-count mix) + within subgroups", title_justify="left")
    gaps.add_column("model", no_wrap=True)
    for label in ("top-1 gap", "comp.", "within", "var. top-k gap", "comp.", "within"):
        gaps.add_column(label, justify="right")
    for _, r in summary.iterrows():
        gaps.add_row(
            r["model"], *(pts(r[f"{m}_{p}"]) for m in ("top1", "vtopk_all") for p in ("gap", "composition", "within"))
        )
    out.print(gaps)


def _story_rows(effect: Any, quantity: str) -> Any:
    """The rows of one ``quantity`` of a ``composition_effect`` report, keyed by group."""
    return effect[effect["quantity"] == quantity].set_index("group")


def _with_interval(row: Any) -> str:
    """``"75.1 % [74.7, 75.5]"``: a report row's value and its interval, in percent."""
    return f"{pct(row['value'], 1)} [{pct(row['ci_low'], 1)[:-2]}, {pct(row['ci_high'], 1)[:-2]}]"


def story_lines(effect: Any) -> list[str]:
    """The story's verdict, from a ``composition_effect`` report (:func:`mlray.reports.composition_frame`): the
    model's value on A and standardized to B's label-count mix (with the range over the other subgroup cut-offs),
    the drop that mix alone predicts, and the mean published gap A -> B of each collection."""
    first = effect.iloc[0]
    a, b, model, metric = first["dataset_a"], first["dataset_b"], first["model"], first["metric"]
    va = _story_rows(effect, "value_a").loc["all"]
    std = _story_rows(effect, "a_standardized_to_b").loc["all"]
    comp = _story_rows(effect, "composition").loc["all"]
    cuts = _story_rows(effect, "a_standardized_to_b_cut")
    spread = ""
    if len(cuts):
        lo, hi = pct(float(cuts["value"].min()), 1), pct(float(cuts["value"].max()), 1)
        spread = f" ({lo[:-2]}-{hi} with the groups cut at {cuts.index[0]} to {cuts.index[-1]})"
    lines = [
        f"{model} {metric} on {a}: {_with_interval(va)} -> {_with_interval(std)} under {b}'s label-count mix{spread}",
        f"= a {100 * comp['value']:.1f}-point drop [{100 * comp['ci_low']:.1f}, {100 * comp['ci_high']:.1f}] from "
        "the label-count mix alone ([..] = bootstrap intervals)",
    ]
    for r in effect[effect["quantity"] == "published_gap_mean"].itertuples():
        median = effect[(effect["quantity"] == "published_gap_median") & (effect["model"] == r.model)]["value"]
        tail = f" (median {100 * float(median.iloc[0]):.2f})" if len(median) else ""
        lines.append(
            f"published: the {a} -> {b} {metric} gap is {100 * r.value:.2f} points on average over {r.n:,} "
            f"{r.model} models{tail}"
        )
    return lines


def print_demo_story(effect: Any, out: Console | None = None) -> None:
    """The demo's opening story from its ``composition_effect`` report: one table (per number of valid labels:
    the share of A's and of B's images and the model's value on A with its interval; then the image counts and
    the overall value) and the verdict lines of :func:`story_lines`."""
    out = out or console
    first = effect.iloc[0]
    a, b, model, metric = first["dataset_a"], first["dataset_b"], first["model"], first["metric"]
    share_a, share_b = _story_rows(effect, "share_a"), _story_rows(effect, "share_b")
    value = _story_rows(effect, "value_a")
    table = Table(title=f"{a} -> {b}: how much of the {metric} drop is the label-count mix?", title_justify="left")
    for col in ("valid labels", f"share of {a}", f"share of {b}", f"{model} {metric} on {a}"):
        table.add_column(col, justify="left" if col == "valid labels" else "right")
    for group in share_a.index:
        table.add_row(group, pct(share_a.loc[group, "value"], 1), pct(share_b.loc[group, "value"], 1),
                      _with_interval(value.loc[group]))  # fmt: skip
    images = (f"{int(share_a['n'].sum()):,} images", f"{int(share_b['n'].sum()):,} images")
    table.add_row("all", *images, _with_interval(value.loc["all"]))
    out.print(table)
    for line in story_lines(effect):
        out.print(line, highlight=False, soft_wrap=True)


def _span(seconds: float) -> str:
    """Seconds as ``1.93 h``, ``12.4 min`` or ``41.0 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _few_names(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n:,} more" if len(names) > n else "")


def plan_lines(estimate: Any, slot_lines: int = 16) -> list[str]:
    """What ``mlray plan`` prints for a :class:`mlray.inference.estimate.RunEstimate`: the models, the datasets,
    the preprocessings and which models share each, what the store holds, where each rate comes from, the
    schedule per slot (at most ``slot_lines`` slots) and the estimate."""
    from .inference.costs import TABLE_NAME

    sim = estimate.simulation
    device = "GPU" if estimate.slot_kind == "gpu" else "CPU model"
    lines = [
        f"plan of {estimate.source} (no inference: nothing is read but the config, the image listing and the store)",
        f"models: {len(estimate.models):,} after expansion, {plural(len(estimate.groups), 'distinct preprocessing')}",
    ]
    for d in estimate.datasets:
        lines.append(f"  {d.name}: {plural(d.images, 'image')} in {plural(d.shards, 'shard')} ({d.how})")
    lines.append("preprocessings (each image is decoded and resized once per preprocessing, shared by its models):")
    for g in sorted(estimate.groups, key=lambda g: (-len(g.models), g.index)):
        p = g.prep
        crop = f"crop {p.crop_pct:g} {p.crop_mode or 'center'}, {p.interpolation}"
        lines.append(f"  {p.input_size[1]}x{p.input_size[2]} {crop}: {plural(len(g.models), 'model')} "
                     f"({_few_names(list(g.models))})")  # fmt: skip
    if estimate.store is None:
        lines.append("store: none given (--out): the whole run is planned")
    else:
        total = sum(d.shards for d in estimate.datasets) * len(estimate.models)
        done = sum(estimate.stored.values())
        lines.append(
            f"store {estimate.store}: holds {done:,} of {total:,} (dataset, model, shard) parts: a resume skips them"
        )
        for d in estimate.datasets:
            parts = [n for (ds, _), n in estimate.stored.items() if ds == d.name]
            complete = sum(1 for n in parts if n >= d.shards)
            lines.append(f"  {d.name}: {sum(parts):,} parts; {complete:,} of {len(estimate.models):,} models complete")
    sources = estimate.sources
    lines.append(
        f"rates: {sources.get('store', 0):,} measured by earlier runs into this store; {sources.get('table', 0):,} "
        f"from the bundled {TABLE_NAME} table (model only; derived from huggingface/pytorch-image-models "
        f"results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv, Apache-2.0); {sources.get('assumed', 0):,} "
        "assumed (the table's median: no row for the architecture)"
    )
    if estimate.slot_kind != "gpu" and sources.get("table", 0) + sources.get("assumed", 0):
        lines.append("  note: the table's rates are one GPU's; CPU slots are much slower, so the times below are low")
    longest = sorted(estimate.models, key=lambda m: -m.seconds)[:5]
    lines.append("longest models: " + ", ".join(f"{m.name} {_span(m.seconds)}" for m in longest))
    lines.append(f"schedule on {plural(estimate.slots, device + ' slot')} ({estimate.slots_from}):")
    per_slot: dict[int, list[Any]] = {}
    for c in sim.chunks:
        per_slot.setdefault(c.slot, []).append(c)
    for slot in sorted(per_slot)[:slot_lines]:
        chunks = per_slot[slot]
        order = list(dict.fromkeys(c.work for c in chunks))
        busy = sum(c.end - c.start for c in chunks)
        lines.append(f"  slot {slot}: {plural(len(order), 'model')}, busy {_span(busy)}, done at "
                     f"{_span(max(c.end for c in chunks))}: {_few_names(order)}")  # fmt: skip
    if len(per_slot) > slot_lines:
        lines.append(f"  ... and {plural(len(per_slot) - slot_lines, 'slot')} more (--json FILE has them all)")
    loads = sum(c.loaded for c in sim.chunks)
    unit = "GPU-hours" if estimate.slot_kind == "gpu" else "slot-hours"
    lines.append(
        f"estimate: {estimate.work_seconds / 3600:,.2f} {unit} of model work (+ {plural(loads, 'model load')} of "
        f"~{estimate.load_seconds:g} s) -> wall time {_span(sim.makespan)} on "
        f"{plural(estimate.slots, device + ' slot')} (lower bound {_span(sim.lower_bound)} = max(work / slots, "
        f"longest model); ratio {sim.ratio:.2f})"
    )
    return lines


def print_plan(estimate: Any, out: Console | None = None) -> None:
    """Print :func:`plan_lines`."""
    out = out or console
    for line in plan_lines(estimate):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------------------------
# mlray analyze: fits, rank changes and group summaries (mlray.analysis)

ANALYSIS_METRICS = ("top1", "real_top1", "vtopk_all", "asma_vtopk_all", "mlpc")


def _interval_text(mean: float, lo: float, hi: float, scale: float = 100.0, signed: bool = True) -> str:
    """``"+1.06 [+0.89, +1.23]"``: a mean and its interval, times ``scale``; ``-`` where missing."""
    if mean != mean:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(round(scale * mean, 2) + 0.0)
    if lo == lo and hi == hi:
        text += f" [{fmt.format(round(scale * lo, 2) + 0.0)}, {fmt.format(round(scale * hi, 2) + 0.0)}]"
    return text


def analysis_pairs(group_summaries: Any) -> list[tuple[str, str, str, str]]:
    """The (collection, reference, dataset, metric) of every gap in a ``group_summaries`` report, in its order,
    restricted to :data:`ANALYSIS_METRICS`."""
    gs = group_summaries
    if gs is None or not len(gs):
        return []
    rows = gs[(gs["grouping"] == "all") & (gs["quantity"] == "gap") & gs["metric"].isin(ANALYSIS_METRICS)]
    return list(dict.fromkeys(zip(rows["collection"], rows["reference"], rows["dataset"], rows["metric"])))


def print_analysis_fits(fits: Any, group_summaries: Any, out: Console | None = None) -> None:
    """The fits of each dataset on its reference (``fits.parquet``), linear and probit, for the metrics of
    :data:`ANALYSIS_METRICS`: models, slope, intercept, R² and residual standard deviation."""
    out = out or console
    if fits is None or not len(fits):
        out.print("(no fits: a fit needs two models with values on two datasets, not all equal on the first)")
        return
    table = Table(title="Fits of dataset B on its reference A across models (probit: the effective-robustness "
                  "scale of Taori et al. 2020)", title_justify="left")  # fmt: skip
    for col in ("collection", "A -> B", "metric", "models"):
        table.add_column(col, no_wrap=True, justify="right" if col == "models" else "left")
    for scale in ("linear", "probit"):
        for col in ("slope", "intercept", "R²", "resid. std"):
            table.add_column(f"{scale} {col}", justify="right", no_wrap=True)
    keyed = fits.set_index(["collection", "dataset_a", "dataset_b", "metric", "scale"])
    for collection, a, b, metric in analysis_pairs(group_summaries):
        cells = []
        n = ""
        for scale in ("linear", "probit"):
            key = (collection, a, b, metric, scale)
            if key not in keyed.index:
                cells += ["-"] * 4
                continue
            f = keyed.loc[key]
            n = f"{int(f['n_models']):,}"
            cells += [f"{f['slope']:.3f}", f"{f['intercept']:+.3f}", f"{f['r2']:.3f}",
                      "-" if f["residual_std"] != f["residual_std"] else f"{f['residual_std']:.4f}"]  # fmt: skip
        if n:
            table.add_row(collection, f"{a} -> {b}", metric, n, *cells)
    out.print(table)


def print_rank_changes(rank_changes: Any, out: Console | None = None, limit: int | None = 20) -> None:
    """Kendall's tau and Spearman's rho between the rankings under top-1 and each multi-label metric
    (``rank_changes.parquet``), with their bootstrap intervals and the model that rises most."""
    out = out or console
    if rank_changes is None or not len(rank_changes):
        out.print("(no rank changes: they need two models with top-1 and a multi-label metric on one dataset)")
        return
    table = Table(title="Ranking under top-1 vs each multi-label metric (95 % bootstrap intervals over models)",
                  title_justify="left")  # fmt: skip
    for col in ("collection", "dataset", "metric", "models", "Kendall tau", "Spearman rho", "rises most"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("models",) else "left")
    defined = rank_changes[rank_changes["kendall_tau"].notna()]
    rows = list(defined.itertuples())
    for r in rows[:limit]:
        up = [m for m in (r.movers if r.movers is not None else []) if m["rank_a"] > m["rank_b"]]
        rise = f"{up[0]['model']} ({up[0]['rank_a']} -> {up[0]['rank_b']})" if up else "-"
        tau = _interval_text(r.kendall_tau, r.kendall_ci_low, r.kendall_ci_high, 1, False)
        rho = _interval_text(r.spearman_rho, r.spearman_ci_low, r.spearman_ci_high, 1, False)
        table.add_row(r.collection, r.dataset, r.metric_b, f"{r.n_models:,}", tau, rho, rise)
    out.print(table)
    if limit is not None and len(rows) > limit:
        out.print(f"... and {plural(len(rows) - limit, 'row')} more in rank_changes.parquet")
    undefined = len(rank_changes) - len(defined)
    if undefined:
        out.print(f"  {plural(undefined, 'comparison')} without a correlation (every model tied under one of the "
                  "two metrics) in rank_changes.parquet", style="dim")  # fmt: skip


def print_group_summaries(group_summaries: Any, out: Console | None = None, grouping: str = "pretrain") -> None:
    """Per collection, for one dataset B (ImageNetV2 MatchedFrequency when the collection has it, else its first
    dataset after the reference) and the metrics top-1 and MLPC: the mean gap, the mean residual from the linear
    fit and the mean effective robustness of each group of ``grouping`` (``group_summaries``), in points with
    their bootstrap intervals; for MLPC also the mean value. Every other pair is in the report."""
    out = out or console
    pairs = [p for p in analysis_pairs(group_summaries) if p[3] in ("top1", "mlpc")]
    shown: dict[str, str] = {}  # collection -> the dataset B shown: ImageNetV2 MatchedFrequency, else the first
    for collection, _, b, _ in pairs:
        if b == "imagenetv2-matched-frequency" or collection not in shown:
            shown[collection] = b if shown.get(collection) != "imagenetv2-matched-frequency" else shown[collection]
    pairs = [p for p in pairs if shown[p[0]] == p[2]]
    if not pairs:
        out.print("(no group summaries: they need models on two datasets)")
        return
    gs = group_summaries[group_summaries["grouping"].isin([grouping, "all"])]
    keyed = gs.set_index(["collection", "reference", "dataset", "metric", "quantity", "group"])
    for collection, a, b, metric in pairs:
        table = Table(title=f"{collection}: {metric} {a} -> {b} by {grouping} (points; [..] = 95 % bootstrap "
                      "intervals over models)", title_justify="left")  # fmt: skip
        quantities: list[tuple[str, str]] = [("value", "mean on B")] if metric == "mlpc" else []
        quantities += [("gap", "mean gap"), ("fit_residual", "above the linear fit"),
                       ("effective_robustness", "effective robustness")]  # fmt: skip
        for col in (grouping, "models", *(label for _, label in quantities)):
            table.add_column(col, no_wrap=True, justify="left" if col == grouping else "right")
        groups = gs[(gs["collection"] == collection) & (gs["dataset"] == b) & (gs["metric"] == metric)
                    & (gs["quantity"] == "gap")]  # fmt: skip
        for g, n in zip(groups["group"], groups["n_models"]):
            cells = []
            for quantity, _ in quantities:
                key = (collection, a, b, metric, quantity, g)
                row = keyed.loc[key] if key in keyed.index else None
                cells.append("-" if row is None else _interval_text(row["mean"], row["ci_low"], row["ci_high"],
                                                                    signed=quantity != "value"))  # fmt: skip
            table.add_row(str(g), f"{int(n):,}", *cells)
        out.print(table)


def print_analysis(result: Any, out: Console | None = None, where: str | None = None) -> None:
    """What ``mlray analyze`` (and ``mlray score``) prints from an :class:`~mlray.analysis.AnalysisResult`: the
    fits, the rank changes, the summaries by pretraining regime, then the reports written (in ``where``, default
    the folder of the written files) and the seconds it took."""
    out = out or console
    frames = result.frames
    print_analysis_fits(frames["fits"], frames["group_summaries"], out)
    print_rank_changes(frames["rank_changes"], out)
    print_group_summaries(frames["group_summaries"], out)
    paths = list(result.paths.values())
    if paths:
        folder = where if where is not None else str(paths[0].parent)
        out.print(f"analysis in [bold]{folder}[/] ({', '.join(p.name for p in paths)}); {result.seconds:.1f} s",
                  soft_wrap=True)  # fmt: skip
