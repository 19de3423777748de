"""Benchmark building the sample edition with premailer (the pipeline's inliner) and with css-inline.

In-process wall time (time.perf_counter, median/p90/min after warm-up runs) of the full build --
parse_body and render_edition (Jinja, MJML compile and inlining of the email and of the web page, text part, links)
plus json.dumps(edition.manifest()) -- as shipped and with pipeline.render.inline_css swapped, in this
script only, for a css-inline equivalent; of each stage alone on the email part (MJML compile, premailer,
css-inline); and the email.html size and tracemalloc peak of one full build with each inliner.

Run from the project root:  .venv/bin/python benchmarks/bench_build.py [--runs 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import css_inline
import premailer.cache
from mjml import mjml2html

import pipeline.render as render
from pipeline import placeholders
from pipeline.config import Settings, load_settings
from pipeline.content import parse_body
from pipeline.draft import Draft, read_draft
from pipeline.inline import DOCTYPE
from pipeline.inline import inline_css as premailer_inline

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
_CSS_INLINER = css_inline.CSSInliner(
    keep_style_tags=False, keep_at_rules=True, keep_link_tags=True, load_remote_stylesheets=False
)
_MEDIA_STYLE = re.compile(r"<style(?=[^>]*\bmedia=)", re.IGNORECASE)  # premailer leaves these alone
_KEEP = ' data-css-inline="keep"'


def css_inline_css(html: str) -> str:
    """pipeline.inline.inline_css with css-inline: at-rules (@media, @import) and <link>s kept, nothing fetched,
    <style media=...> blocks kept as premailer keeps them, placeholders protected, lower-case doctype."""
    inlined = _CSS_INLINER.inline(placeholders.protect(_MEDIA_STYLE.sub("<style" + _KEEP, html))).replace(_KEEP, "")
    body = re.sub(r"^\s*<!doctype[^>]*>\s*", "", placeholders.restore(inlined), flags=re.IGNORECASE)
    return f"{DOCTYPE}\n{body}"


@contextmanager
def patched(name: str, function: Callable[[str], str]) -> Iterator[None]:
    """Temporarily replace ``name`` (inline_css, mjml2html) as pipeline.render sees it; restore afterwards."""
    original = getattr(render, name)
    setattr(render, name, function)
    try:
        yield
    finally:
        setattr(render, name, original)


def build(draft: Draft, settings: Settings) -> render.Edition:
    edition = render.render_edition(parse_body(draft), settings)
    json.dumps(edition.manifest(), ensure_ascii=False, indent=2)
    return edition


def timed(function: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Wall times in milliseconds of ``runs`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return sorted(samples)[max(0, math.ceil(0.9 * len(samples)) - 1)]  # nearest rank


def size_and_peak(draft: Draft, settings: Settings) -> tuple[int, float]:
    """email.html bytes and tracemalloc peak (KiB) of one full build."""
    tracemalloc.start()
    edition = build(draft, settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return len(edition.email_html.encode("utf-8")), peak / 1024


def capture_email_mjml(draft: Draft, settings: Settings) -> tuple[str, str]:
    """The email part's MJML source and compiled HTML, caught by wrapping render.mjml2html for one build."""
    seen: list[tuple[str, str]] = []

    def spy(source: str) -> str:
        compiled = mjml2html(source)
        seen.append((source, compiled))
        return compiled

    with patched("mjml2html", spy):
        render.render_edition(parse_body(draft), settings)
    return seen[0]  # render_edition compiles the email first, then the web page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    settings = load_settings(ROOT / "newsletter.toml")
    draft = read_draft(ROOT / "drafts" / SAMPLE)
    source, compiled = capture_email_mjml(draft, settings)
    results: dict[str, list[float]] = {}
    memory: dict[str, tuple[int, float]] = {}
    for name, function in (("premailer", premailer_inline), ("css-inline", css_inline_css)):
        with patched("inline_css", function):
            results[f"full build, {name}"] = timed(lambda: build(draft, settings), args.runs, args.warmup)
            memory[name] = size_and_peak(draft, settings)

    def cold_premailer() -> str:
        premailer.cache.cache.clear()  # premailer caches parsed CSS across calls in one process
        return premailer_inline(compiled)

    stages: dict[str, Callable[[], Any]] = {
        "MJML compile (email)": lambda: mjml2html(source),
        "premailer inline (email)": lambda: premailer_inline(compiled),
        "premailer inline, CSS cache cleared": cold_premailer,
        "css-inline inline (email)": lambda: css_inline_css(compiled),
    }
    results.update({stage: timed(function, args.runs, args.warmup) for stage, function in stages.items()})

    versions = ", ".join(f"{package} {version(package)}" for package in ("premailer", "css-inline", "mjml-python"))
    print(f"Python {platform.python_version()} ({platform.machine()}); {versions}")
    print(f"sample {SAMPLE}: {args.runs} runs after {args.warmup} warm-up runs, in-process wall time")
    print(f"\n{'stage':<38}{'median ms':>11}{'p90 ms':>10}{'min ms':>10}")
    for stage, samples in results.items():
        print(f"{stage:<38}{statistics.median(samples):>11.2f}{p90(samples):>10.2f}{min(samples):>10.2f}")
    print(f"\n{'inliner':<14}{'email.html bytes':>18}{'tracemalloc peak KiB':>22}")
    for name, (size, peak) in memory.items():
        print(f"{name:<14}{size:>18,}{peak:>22,.0f}")
    ratio = statistics.median(results["full build, premailer"]) / statistics.median(results["full build, css-inline"])
    print(f"\nfull build median, premailer / css-inline: {ratio:.2f}x")
    print("tracemalloc sees Python allocations only, not css-inline's Rust or libxml2's C memory.")
    print("Figures vary from run to run, more so on shared machines: compare ratios within one run.")


if __name__ == "__main__":
    main()
