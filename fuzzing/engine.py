"""What the fuzz targets share: the two engines (atheris, hypothesis), the mutator, the command line.

A target (``fuzz_codec``, ``fuzz_ws``, ``fuzz_lane``) defines ``check(data)`` (raises on a
disagreement), its seeds and its tokens; this module runs it for a bounded time:

- atheris (coverage-guided, when its wheel installs), on a corpus written from the seeds, crashes
  saved under the target's work directory;
- hypothesis (random + mutation of the seeds) otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def run_atheris(
    check: Callable[[bytes], None],
    work: Path,
    corpus_seeds: dict[str, bytes],
    instrument: str,
    seconds: int,
    max_len: int = 4096,
) -> int:
    """``check`` under atheris for ``seconds``, with coverage of module ``instrument`` guiding it."""
    import atheris

    with atheris.instrument_imports():
        importlib.import_module(instrument)

    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (work / "crashes").mkdir(exist_ok=True)
    for name, data in corpus_seeds.items():
        (corpus / name).write_bytes(data)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-max_len={max_len}",
        f"-artifact_prefix={work / 'crashes'}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, check)
    atheris.Fuzz()  # exits the process: 0 when the time is up, non-zero on a crash
    return 0


def mutated(st, seeds: list[bytes], tokens: list[bytes], *, repeat: int, edits: int, cut: int, copy: int):
    """A hypothesis strategy: a seed (repeated up to ``repeat`` times) with up to ``edits`` byte flips,
    token insertions, deletions of up to ``cut`` bytes and duplications of up to ``copy``."""

    @st.composite
    def strategy(draw):
        data = bytearray(draw(st.sampled_from(seeds)) * draw(st.integers(1, repeat)))
        for _ in range(draw(st.integers(0, edits))):
            op = draw(st.integers(0, 3))
            at = draw(st.integers(0, len(data)))
            if op == 0 and data:  # flip a byte
                data[at % len(data)] = draw(st.integers(0, 255))
            elif op == 1:  # insert a token
                data[at:at] = draw(st.sampled_from(tokens))
            elif op == 2:  # delete a span
                del data[at : at + draw(st.integers(1, cut))]
            else:  # duplicate a span
                data[at:at] = data[at : at + draw(st.integers(1, copy))]
        return bytes(data)

    return strategy()


def run_hypothesis(check: Callable[[bytes], None], inputs, seconds: int, max_examples: int = 500) -> int:
    """``check`` on examples of the strategy ``inputs`` (bytes) until ``seconds`` have passed;
    returns how many ran."""
    from hypothesis import HealthCheck, Phase, given, settings

    examples = 0

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def batch(data):
        nonlocal examples
        examples += 1
        check(data)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch()
    return examples


def main(
    argv: list[str] | None,
    doc: str,
    what: str,
    atheris_engine: Callable[[int], int],
    hypothesis_engine: Callable[[int], int],
) -> int:
    """The command line of a target: ``--seconds`` (FUZZ_SECONDS, 60) and ``--engine``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"fuzzing {what} with {engine} for {args.seconds} s", flush=True)
    return atheris_engine(args.seconds) if engine == "atheris" else hypothesis_engine(args.seconds)
