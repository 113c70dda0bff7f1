"""Generation throughput: the batched ``transformers`` backend vs a plain ``model.generate`` loop at
batch size 1, on the same model, the same prompts and the same sampling settings, in one run.

Both outputs go through the same parser, so "valid samples/s" counts what the study can use.

    python bench/bench_generate.py [--model smollm2-135m-instruct] [--n 32] [--bias-type contrastive-explicit]
"""

from __future__ import annotations

import argparse
import time

import torch

from biasutils import generate as g
from biasutils.config import load_params, resolve_device
from biasutils.store import Store


def plain_loop(backend: g.TransformersBackend, requests: list[g.Request], seed: int) -> tuple[dict[str, str], int]:
    """The baseline: one prompt at a time through ``model.generate``, nothing else."""
    model, tokenizer = backend.load()
    answers, new_tokens = {}, 0
    for request in requests:
        encoded = tokenizer(backend.prompt_text(request), return_tensors="pt", add_special_tokens=False).to(model.device)
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = model.generate(
                **encoded, do_sample=True, temperature=backend.temperature, top_p=backend.top_p,
                max_new_tokens=backend.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                stop_strings=["\n\n"], tokenizer=tokenizer,
            )
        new = output[0, encoded["input_ids"].shape[1] :]
        new_tokens += int((new != tokenizer.pad_token_id).sum())
        answers[request.id] = tokenizer.decode(new, skip_special_tokens=True)
    return answers, new_tokens


def count_valid(answers: dict[str, str], requests: list[g.Request], params, templates) -> int:
    parsed = [g.parse_answer(answers[r.id], r, True, params.generate, templates["refusal_markers"]) for r in requests]
    return sum(sample is not None for sample, _ in parsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--bias-type", default="contrastive-explicit")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    params = load_params("classroom", [f"models.generator={args.model}", f"generate.batch_size={args.batch_size}"])
    store = Store()
    device = resolve_device(params)
    templates = g.load_templates(params.generate)
    occupations = g.balanced_occupations(args.n, params.data.occupations)
    requests = g.plan_requests("gender", args.bias_type, occupations, 0, params.seed, templates,
                               params.data.cultures, g.default_name_book())
    backend = g.make_backend(params, store, device)
    backend.load()  # load before timing

    start = time.perf_counter()
    batched, batched_tokens = g.answer_requests(backend, requests, params.seed)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    plain, plain_tokens = plain_loop(backend, requests, params.seed)
    plain_s = time.perf_counter() - start

    rows = [
        ("plain generate, batch 1", plain_s, count_valid(plain, requests, params, templates), plain_tokens),
        (f"backend, batch {args.batch_size}", batched_s, count_valid(batched, requests, params, templates), batched_tokens),
    ]
    print(f"model {args.model} on {device}, {args.n} prompts ({args.bias_type}), max_new_tokens {params.generate.max_new_tokens}")
    print(f"{'run':26} {'seconds':>8} {'valid':>6} {'valid/s':>8} {'new tok':>8} {'new tok/s':>10}")
    for name, seconds, valid, tokens in rows:
        print(f"{name:26} {seconds:8.1f} {valid:6d} {valid / seconds:8.2f} {tokens:8d} {tokens / seconds:10.1f}")
    print(f"speed-up in valid samples/s: {(rows[1][2] / rows[1][1]) / max(rows[0][2] / rows[0][1], 1e-9):.2f}x; "
          f"in new tokens/s: {(rows[1][3] / rows[1][1]) / (rows[0][3] / rows[0][1]):.2f}x")


if __name__ == "__main__":
    main()
