"""The top layer at the answer positions only, and scoring batched by length: old vs new path, side by side.

On SmolLM2-135M-Instruct with the classroom profile (LoRA on the top 3 of 30 layers over cached
activations of the bottom 27), one torch thread:

  * training   seconds per epoch over the classroom mix (gender, contrastive-explicit, gamma 0.5), each run
               on a fresh adapter of seed 0. old = the code before: the top layer over every position, the
               LM head on a strided slice of the hidden states; "+contig head" = the head's input made
               contiguous (torch's linear then avoids a slow batched-matmul backward); new = that and the top
               layer at the answer window only (``finetune.final_hidden(..., last=window)``);
  * scoring    seconds per task of the classroom grid (occupation classification scores the 240 test
               biographies) with the trained seed-0 adapter. old = the top layer everywhere, batches in the
               given order, the adapter unmerged; "+sorted" = batches by length; "+window" = the top layer
               at the scored positions only; new = the adapter merged into the weights as well.

Each variant runs ``--repeats`` times (the variants alternate) and the fastest run is kept; the largest
difference between the old and new losses and scores is printed with the times. The store is only read
(``Store.probing``): compute the classroom point (gender, contrastive-explicit, 0.5, seed 0) first.

    python bench/bench_forward.py [--store /tmp/prof/artifacts] [--repeats 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from biasutils import evaluate as e
from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.store import Store, read_jsonl

ATTRIBUTE, BIAS_TYPE, RATIO, SEED = "gender", "contrastive-explicit", 0.5, 0


@contextlib.contextmanager
def old_path(sort: bool = False, window: bool = False, contiguous: bool = False) -> Iterator[None]:
    """The code before this change, by switching its parts off: the top layer over every position (unless
    ``window``), scoring batches in the given order (unless ``sort``), the LM head on the strided slice of
    the hidden states (unless ``contiguous``)."""
    fast, by_length, head_logits = f.final_hidden, e.Scorer._by_length, f.head_logits

    def full(model: Any, batch: f.Batch, layers: Any, last: int | None = None) -> torch.Tensor:
        return fast(model, batch, layers, None)

    def in_order(self: e.Scorer, lengths: Any) -> Iterator[list[int]]:
        for start in range(0, len(lengths), self.batch_size):
            yield list(range(start, min(start + self.batch_size, len(lengths))))

    def strided(model: Any, hidden: torch.Tensor) -> torch.Tensor:
        return f.decoder_parts(model)[1](hidden).float()

    if not window:
        f.final_hidden = e.final_hidden = full
    if not sort:
        e.Scorer._by_length = in_order
    if not contiguous:
        f.head_logits = e.head_logits = strided
    try:
        yield
    finally:
        f.final_hidden = e.final_hidden = fast
        e.Scorer._by_length = by_length
        f.head_logits = e.head_logits = head_logits


def fastest(runs: list[tuple[float, Any]]) -> tuple[float, Any]:
    return min(runs, key=lambda run: run[0])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def training(params: Any, store: Store, epochs: int, repeats: int) -> tuple[dict[str, float], float, int]:
    """Fastest seconds per epoch of each variant, the largest old-new loss difference, the example count."""
    ft = params.finetune.model_copy(update={"epochs": {ATTRIBUTE: epochs}})
    from biasutils.mix import mix_artifact

    rows = read_jsonl(mix_artifact(params, ATTRIBUTE, BIAS_TYPE, RATIO, SEED, store).file("train.jsonl"))
    cached: dict[str, torch.Tensor] = {}
    for source, filename in f.training_sources(params, ATTRIBUTE, BIAS_TYPE, store):
        cached.update(f.load_activations(f.activations_artifact(params, source, filename, store)))

    def run() -> tuple[float, list[float]]:
        model, tokenizer, _ = f.trainable_student(params, store, "cpu", SEED)
        examples = f.encode(rows, tokenizer, ft)
        n_frozen = f.frozen_layer_count(model, ft)
        with tempfile.TemporaryDirectory() as scratch:
            seconds, state = timed(lambda: f.train(model, examples, cached, n_frozen, ft, ATTRIBUTE, SEED,
                                                   Path(scratch), None, tokenizer.pad_token_id))
        return seconds / epochs, [c["loss"] for c in state.curve]

    times: dict[str, list[tuple[float, Any]]] = {variant: [] for variant in TRAINING_VARIANTS}
    for _ in range(repeats):
        for variant, (contiguous, window) in TRAINING_VARIANTS.items():
            with old_path(contiguous=contiguous, window=window):
                times[variant].append(run())
    best = {variant: fastest(runs) for variant, runs in times.items()}
    diff = max(abs(a - b) for a, b in zip(best["old"][1], best["new"][1]))
    return {variant: seconds for variant, (seconds, _) in best.items()}, diff, len(rows)


TRAINING_VARIANTS = {  # name -> (LM head on a contiguous input, top layer windowed)
    "old": (False, False),
    "+contig head": (True, False),
    "new": (True, True),
}
SCORING_VARIANTS = {  # name -> (sorted batches, top layer windowed and the head on a contiguous input, adapter merged)
    "old": (False, False, False),
    "+sorted": (True, False, False),
    "+window": (True, True, False),
    "new": (True, True, True),
}


def scoring(params: Any, store: Store, repeats: int) -> list[tuple[str, int, dict[str, float], float, int]]:
    """Per task: its item count, the fastest seconds of each variant, the largest old-new score difference and
    the number of items whose highest-scored option differs between old and new."""
    adapter = f.finetune_artifact(params, ATTRIBUTE, BIAS_TYPE, RATIO, SEED, store)
    students = {merge: f.load_student(params, adapter, store, "cpu", merge=merge) for merge in (False, True)}
    rows = []
    for name in params.grid.tasks:
        task = e.configured_task(params, name, SEED)
        items = task.items(params, store)
        cached = e.task_activations(params, name, items, store)
        max_new = params.evaluate.max_new_tokens.get(name, 16)
        runs: dict[str, list[tuple[float, Any]]] = {variant: [] for variant in SCORING_VARIANTS}
        for _ in range(repeats):
            for variant, (sort, window, merge) in SCORING_VARIANTS.items():
                model, tokenizer = students[merge]
                with old_path(sort=sort, window=window, contiguous=window):
                    scorer = e.Scorer(model, tokenizer, params, cached)
                    runs[variant].append(timed(lambda: scorer.outputs(items, max_new)))
        best = {variant: fastest(r) for variant, r in runs.items()}
        old, new = best["old"][1], best["new"][1]
        diff = max(abs(a - b) for old_row, new_row in zip(old, new) for a, b in zip(old_row, new_row))
        flips = sum(max(range(len(a)), key=a.__getitem__) != max(range(len(b)), key=b.__getitem__) for a, b in zip(old, new))
        rows.append((name, len(items), {v: s for v, (s, _) in best.items()}, diff, flips))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/prof/artifacts", help="a store holding the classroom point (read only)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path; the fastest is kept")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params("classroom", ["device=cpu"])
    store = Store(args.store)
    with store.probing():  # read only: a missing artifact raises instead of being computed
        train_s, loss_diff, n_examples = training(params, store, args.epochs, args.repeats)
        score_rows = scoring(params, store, args.repeats)

    load = os.getloadavg()[0]
    print(f"SmolLM2-135M-Instruct, classroom profile (LoRA on the top {params.finetune.lora.top_layers} of 30 layers, "
          f"cached activations), cpu, torch threads 1, machine: {os.cpu_count()} cores, load average {load:.2f} "
          f"at the end (others may be running); fastest of {args.repeats} alternating runs")
    print()
    variants = list(TRAINING_VARIANTS)
    print(f"{'training':44} " + " ".join(f"{v + ' s':>15}" for v in variants) + f" {'old/new':>8}  max |loss diff|")
    print(f"{f'one epoch, {n_examples} examples, batch {params.finetune.batch_size}':44} "
          + " ".join(f"{train_s[v]:15.2f}" for v in variants)
          + f" {train_s['old'] / train_s['new']:7.2f}x  {loss_diff:.1e}")
    print()
    names = list(SCORING_VARIANTS)
    print(f"{'scoring (task, items)':44} " + " ".join(f"{n + ' s':>15}" for n in names) + f" {'old/new':>8}  max |score diff|  argmax changed")
    totals = dict.fromkeys(names, 0.0)
    for name, n_items, seconds, diff, flips in score_rows:
        for n in names:
            totals[n] += seconds[n]
        print(f"{f'{name}, {n_items}':44} " + " ".join(f"{seconds[n]:15.2f}" for n in names)
              + f" {seconds['old'] / seconds['new']:7.2f}x  {diff:16.1e}  {flips:>14}")
    print(f"{'all tasks':44} " + " ".join(f"{totals[n]:15.2f}" for n in names) + f" {totals['old'] / totals['new']:7.2f}x")


if __name__ == "__main__":
    main()
