"""Fine-tuning throughput (training tokens/s) of biasutils.finetune vs a plain PEFT + transformers
Trainer run on the same model, data and LoRA settings, in one run.

CPU (default): SmolLM2-135M-Instruct on a classroom mix (γ = 0.5), one epoch each of
  * trainer      plain PEFT + `transformers.Trainer`, LoRA on every layer, labels on the answer only;
  * loop         our loop, LoRA on every layer (the LM head applied at the answer positions only);
  * loop top-k   our loop, LoRA on the top k layers, the frozen layers' activations cached
                 (the cache is built once per data set and shared by every run; its cost is shown).

GPU (--random-llama-8b): a randomly initialised model of Llama-3.1-8B's architecture in bf16 (no Hub
download), LoRA r=16 on all seven projections, random token batches (half of them "augmented"); tokens/s
and peak memory for our loop, our loop with the loss-based mitigation's alignment term (stratified
batches; the top layer then runs at every position), and the Trainer, each after an untimed warm-up of
three steps on its own fresh model.

    python bench/bench_finetune.py [--top-layers 2] [--epochs 1] [--examples 48]
    python bench/bench_finetune.py --random-llama-8b [--steps 20] [--batch-size 8] [--length 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from biasutils import finetune as f
from biasutils.config import Finetune, load_params


def trainer_run(model: Any, examples: list[f.Example], ft: Finetune, epochs: int, bf16: bool) -> float:
    """Seconds for a plain Trainer run over the same examples (answer-only labels, right padding)."""
    from transformers import Trainer, TrainingArguments

    rows = [{"input_ids": list(e.input_ids),
             "labels": [-100] * (len(e.input_ids) - e.answer_len) + list(e.input_ids[-e.answer_len :])} for e in examples]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=ft.batch_size, num_train_epochs=epochs,
            learning_rate=ft.lr["gender"], weight_decay=ft.weight_decay, max_grad_norm=ft.grad_clip,
            lr_scheduler_type="constant", logging_strategy="no", save_strategy="no", report_to=[],
            bf16=bf16, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0,
            remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=pad_right)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def pad_right(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """The usual SFT collator: right padding, pad label -100."""
    width = max(len(x["input_ids"]) for x in features)
    batch = {"input_ids": torch.zeros((len(features), width), dtype=torch.long),
             "attention_mask": torch.zeros((len(features), width), dtype=torch.long),
             "labels": torch.full((len(features), width), -100, dtype=torch.long)}
    for i, x in enumerate(features):
        n = len(x["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(x["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["labels"][i, :n] = torch.tensor(x["labels"])
    return batch


def loop_run(model: Any, examples: list[f.Example], cached: Any, n_frozen: int, ft: Finetune, epochs: int, pad: int,
             alignment: float | None = None) -> float:
    """Seconds for our loop; ``alignment``: with the loss-based mitigation's term at that λ (stratified batches)."""
    from biasutils.mitigate import AlignmentLoss, StratifiedPlan

    ft = ft.model_copy(update={"epochs": {"gender": epochs, "culture": epochs}})
    extra = AlignmentLoss(alignment) if alignment is not None else None
    plan = StratifiedPlan(ft.batch_size)([e.source for e in examples]) if alignment is not None else None
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        f.train(model, examples, cached, n_frozen, ft, "gender", 0, Path(scratch), extra, pad, plan)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start


def fresh_peft(base_factory: Any, ft: Finetune) -> Any:
    from peft import get_peft_model

    model = base_factory()
    n_layers = f.decoder_parts(model)[0].config.num_hidden_layers
    return get_peft_model(model, f.lora_config(ft, n_layers, f.frozen_layer_count(model, ft)))


def cpu_bench(top_layers: int, epochs: int, n_examples: int) -> None:
    from biasutils.mix import mix_artifact
    from biasutils.models import load_causal_lm
    from biasutils.store import Store, read_jsonl

    store = Store()
    params = load_params("classroom", ["device=cpu", "finetune.lr={gender: 0.0001, culture: 0.0001}"])
    rows = read_jsonl(mix_artifact(params, "gender", "contrastive-explicit", 0.5, 0, store).file("train.jsonl"))
    base = lambda: load_causal_lm(params.models.student, store, "cpu")[0]
    _, tokenizer = load_causal_lm(params.models.student, store, "cpu")
    ft_all = params.finetune.model_copy(update={"lora": params.finetune.lora.model_copy(update={"top_layers": None})})
    ft_top = params.finetune.model_copy(update={"lora": params.finetune.lora.model_copy(update={"top_layers": top_layers})})
    examples = f.encode(rows[:n_examples], tokenizer, ft_all)
    tokens = sum(len(e.input_ids) for e in examples) * epochs

    results = [("trainer (PEFT + Trainer), all layers", trainer_run(fresh_peft(base, ft_all), examples, ft_all, epochs, False))]
    results.append(("our loop, all layers", loop_run(fresh_peft(base, ft_all), examples, None, 0, ft_all, epochs, tokenizer.pad_token_id)))
    model = fresh_peft(base, ft_top)
    n_frozen = f.frozen_layer_count(model, ft_top)
    start = time.perf_counter()
    cached = {e.id: h for e, h in zip(examples, f.lower_activations(model, examples, n_frozen))}
    cache_s = time.perf_counter() - start
    results.append((f"our loop, top {top_layers} layers (cached)", loop_run(model, examples, cached, n_frozen, ft_top, epochs, tokenizer.pad_token_id)))

    print(f"SmolLM2-135M on cpu, {len(examples)} examples, {tokens} training tokens ({epochs} epoch(s)), batch {ft_all.batch_size}")
    print(f"{'run':42} {'seconds':>8} {'tokens/s':>9} {'vs trainer':>10}")
    for name, seconds in results:
        print(f"{name:42} {seconds:8.1f} {tokens / seconds:9.1f} {results[0][1] / seconds:9.2f}x")
    print(f"one-off activation cache for these examples: {cache_s:.1f} s (shared by every run on the same data)")


def llama_8b_config() -> Any:
    """Llama-3.1-8B's architecture, config values from its model card (the Hub need not be reachable)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    )


def random_llama_8b() -> Any:
    """Llama-3.1-8B's architecture, random weights, bf16 on the GPU."""
    from transformers import LlamaForCausalLM

    with torch.device("cuda"):
        model = LlamaForCausalLM(llama_8b_config()).to(torch.bfloat16)
    return model


def gpu_bench(steps: int, batch_size: int, length: int) -> None:
    params = load_params("paper")
    ft = params.finetune.model_copy(update={"batch_size": batch_size})
    generator = torch.Generator().manual_seed(0)
    examples = [
        f.Example(id=str(i), input_ids=tuple(torch.randint(0, 128000, (length,), generator=generator).tolist()),
                  answer_len=4, source=("original", "augmented")[i % 2], group="male")
        for i in range(steps * batch_size)
    ]
    tokens = steps * batch_size * length
    rows = []
    alignment = params.mitigate.loss.weight
    for name in ("our loop (peft backend)", f"our loop + alignment loss (λ = {alignment:g})", "trainer (PEFT + Trainer)"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = fresh_peft(random_llama_8b, ft)
        weight = alignment if "alignment" in name else None
        loop_run(model, examples[: 3 * batch_size], None, 0, ft, 1, 0, weight)  # untimed warm-up: kernels, allocator
        torch.cuda.reset_peak_memory_stats()
        if name.startswith("our"):
            seconds = loop_run(model, examples, None, 0, ft, 1, 0, weight)
        else:
            seconds = trainer_run(model, examples, ft, 1, True)
        rows.append((name, seconds, torch.cuda.max_memory_allocated() / 2**30))
        del model
    print(f"random-init Llama-3.1-8B architecture, bf16, LoRA r={ft.lora.r} on {len(ft.lora.target_modules)} projections, "
          f"{steps} steps of {batch_size} x {length} tokens on {torch.cuda.get_device_name()}")
    print(f"{'run':28} {'seconds':>8} {'tokens/s':>9} {'peak GiB':>9}")
    for name, seconds, peak in rows:
        print(f"{name:28} {seconds:8.1f} {tokens / seconds:9.0f} {peak:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--examples", type=int, default=48, help="rows of the mix to train on (CPU)")
    parser.add_argument("--random-llama-8b", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    if args.random_llama_8b:
        gpu_bench(args.steps, args.batch_size, args.length)
    else:
        cpu_bench(args.top_layers, args.epochs, args.examples)


if __name__ == "__main__":
    main()
