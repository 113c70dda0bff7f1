"""Wall time of ``python -m biasutils audit`` on 2,000 original + 2,000 augmented biographies, per stage.

Both files are offline-corpus biographies (:func:`biasutils.corpus.build_corpus`) with columns text,
occupation and gender: the original is 2,000 rows of the balanced training split (seed 0); the
augmented one is 2,000 rows of another draw (seed 1) skewed the way a stereotyped generator writes
(:data:`FEMALE_SHARE`: 85% women among nurses, 15% among software engineers, ...). Only the files are
built in this process: the audit runs in a fresh interpreter (``python -m biasutils audit``, i.e.
``biasutils.__main__.main``), so imports and the model load count as they do for a user. Stage seconds
come from the report's summary.json; "imports and start-up" is the rest of the wall time. No
``--generator``: the target is the whole audit in under a minute on the 2-core CPU.

    python bench/bench_audit.py [--rows 2000] [--max-per-side 500] [--format jsonl|csv|parquet]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from biasutils.config import GENDERS, OCCUPATIONS, Data
from biasutils.corpus import build_corpus

FEMALE_SHARE = {"architect": 0.2, "dentist": 0.5, "nurse": 0.85, "painter": 0.5, "professor": 0.4,
                "software_engineer": 0.15}
WRITERS = {"jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
           "csv": lambda frame, path: frame.to_csv(path, index=False),
           "parquet": lambda frame, path: frame.to_parquet(path, index=False)}


def corpus_rows(n_per_cell: int, seed: int) -> pd.DataFrame:
    """Training biographies with ``n_per_cell`` rows per occupation x gender, as the audit's columns."""
    rows = build_corpus(Data(n_train=n_per_cell * 2 * len(OCCUPATIONS), n_test=2 * len(OCCUPATIONS)), seed)["train"]
    return pd.DataFrame(rows).rename(columns={"hard_text": "text", "gender_name": "gender"})[
        ["text", "occupation", "gender"]]


def original_rows(n: int) -> pd.DataFrame:
    return corpus_rows(math.ceil(n / (2 * len(OCCUPATIONS))), seed=0).head(n)


def augmented_rows(n: int) -> pd.DataFrame:
    """``n`` rows, the occupations equally often, each with :data:`FEMALE_SHARE` women."""
    per_occupation = [n // len(OCCUPATIONS) + (i < n % len(OCCUPATIONS)) for i in range(len(OCCUPATIONS))]
    largest_cell = max(per_occupation) * max(max(share, 1 - share) for share in FEMALE_SHARE.values())
    pool = corpus_rows(math.ceil(largest_cell), seed=1)
    parts = []
    for occupation, size in zip(OCCUPATIONS, per_occupation):
        n_female = round(size * FEMALE_SHARE[occupation])
        for gender, count in zip(GENDERS, (size - n_female, n_female)):
            parts.append(pool[(pool.occupation == occupation) & (pool.gender == gender)].head(count))
    return pd.concat(parts).sample(frac=1, random_state=1).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per file (default: 2000)")
    parser.add_argument("--max-per-side", type=int, default=500, help="the audit's --max-per-side (default: 500)")
    parser.add_argument("--format", choices=list(WRITERS), default="jsonl")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-audit-") as root:
        paths = {side: Path(root) / f"{side}.{args.format}" for side in ("original", "augmented")}
        WRITERS[args.format](original_rows(args.rows), paths["original"])
        WRITERS[args.format](augmented_rows(args.rows), paths["augmented"])
        command = [sys.executable, "-m", "biasutils", "audit", "--original", str(paths["original"]),
                   "--augmented", str(paths["augmented"]), "--label-field", "occupation",
                   "--max-per-side", str(args.max_per_side), "--out", str(Path(root) / "report")]
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        total = time.perf_counter() - start
        seconds = json.loads((Path(root) / "report" / "summary.json").read_text())["seconds"]

    print(f"{args.rows} original + {args.rows} augmented rows ({args.format}), at most {args.max_per_side} texts "
          "per file embedded, minilm-l6, no --generator")
    print(done.stdout.strip())
    print(f"{'stage':34} {'seconds':>8}")
    for stage, value in seconds.items():
        print(f"{stage:34} {value:8.1f}")
    print(f"{'imports and start-up':34} {total - sum(seconds.values()):8.1f}")
    print(f"{'total (wall, python -m biasutils)':34} {total:8.1f}")


if __name__ == "__main__":
    main()
