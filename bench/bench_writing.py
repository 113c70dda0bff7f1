"""What the multi-round students' writing objective costs, and what its two savings buy (issue 13).

One classroom round-1 mix (60 original + 60 neutral samples of SmolLM2-135M, γ = 0.5), fine-tuned on one
torch thread as a run's worker does: classification only (the main study), classification + writing with
the whole biographies, and with them cut at ``generate.max_new_tokens`` (what the rounds train). Each is
timed in a fresh store that shares only the model: the frozen layers' activations of its examples and the
training, what a round's fine-tune costs.

    python bench/bench_writing.py [--store <a classroom store with the model and data>] [--epochs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    from biasutils import multiround as mr
    from biasutils.config import load_params
    from biasutils.finetune import finetune_artifact
    from biasutils.finetune import training as training_module

    collate = training_module.collate

    def dense_collate(*args, **kwargs):  # the same batch, flagged as classification: the dense head
        batch = collate(*args, **kwargs)
        batch.writes = False
        return batch
    from biasutils.store import Store

    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None, help="a store with the classroom model and data (default: BIAS_STORE)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params("classroom", ["multiround.rounds=1", "multiround.seeds=[0]",
                                       f"finetune.epochs={{gender: {args.epochs}, culture: {args.epochs}}}"])
    source = Store(args.store) if args.store else Store()
    settings = mr.round_params(params)
    chain = mr.round_artifacts(params, 0, 1, source)  # the round's samples and mix (computed on a miss)
    variants = {
        "classify only (main study)": ({"objective": "classify"}, True),
        "classify + write, the head on the whole window": ({}, False),
        "classify + write, the head on the answer tokens (rounds)": ({}, True),
    }
    print(f"{'objective':52s} {'seconds':>8s} {'ratio':>6s}")
    first = None
    for label, (update, sparse) in variants.items():
        finetune = settings.finetune.model_copy(update=update)
        training_module.collate = collate if sparse else dense_collate
        with tempfile.TemporaryDirectory() as root:
            store = Store(root)
            store.root.joinpath("model-checkpoint").symlink_to(source.root / "model-checkpoint")
            start = time.perf_counter()
            finetune_artifact(settings.model_copy(update={"finetune": finetune}), "gender", "neutral", 0.5, 0, store,
                              mix=chain.mix, sources=[(mr._original(settings, source), "train.jsonl"), (chain.samples, "samples.jsonl")])
            seconds = time.perf_counter() - start
        first = first or seconds
        print(f"{label:52s} {seconds:8.1f} {seconds / first:6.2f}")


if __name__ == "__main__":
    main()
