"""Fine-tuning throughput (training tokens/s) of biasutils.finetune vs a plain PEFT + transformers
Trainer run on the same model, data and LoRA settings, in one run.

CPU (default): SmolLM2-135M-Instruct on a classroom mix (γ = 0.5), one epoch each of
  * trainer      plain PEFT + `transformers.Trainer`, LoRA on every layer, labels on the answer only;
  * loop         our loop, LoRA on every layer (the LM head applied at the answer positions only);
  * loop packed  the same on packed batches (finetune.packing: no padding, attention within each example);
  * loop top-k   our loop, LoRA on the top k layers, the frozen layers' activations cached
                 (the cache is built once per data set and shared by every run; its cost is shown).

--random-llama-8b: a randomly initialised model of Llama-3.1-8B's architecture (no Hub download), bf16
on a GPU, LoRA r=16 on all seven projections, examples of random tokens whose lengths vary from a
quarter of --length to --length, 4 answer tokens each, half of them "augmented". Tokens/s, MFU (model
FLOPs by :func:`lora_flops` over the card's dense bf16 peak) and peak memory of: our loop on padded and
on packed batches, packed with the loss-based mitigation's alignment term, a plain PEFT + Trainer run
and unsloth (where it loads), each after an untimed warm-up of three steps on its own fresh model. On a
CPU, --layers 1 with a small batch is a dry run of the script (float32; its figures mean nothing).

    python bench/bench_finetune.py [--top-layers 2] [--epochs 1] [--examples 48]
    python bench/bench_finetune.py --random-llama-8b [--steps 20] [--batch-size 16] [--length 512] [--gradient-checkpointing]
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

    from biasutils.finetune.training import peft_wrapping

    model = base_factory()
    n_layers = f.decoder_parts(model)[0].config.num_hidden_layers
    with peft_wrapping():
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
    packed = ft_all.model_copy(update={"packing": True})
    results.append(("our loop, all layers, packed", loop_run(fresh_peft(base, packed), examples, None, 0, packed, epochs, tokenizer.pad_token_id)))
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


PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16, no sparsity


def llama_8b_config(layers: int = 32) -> Any:
    """Llama-3.1-8B's architecture, config values from its model card (the Hub need not be reachable);
    fewer ``layers`` for a dry run."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False, attn_implementation="sdpa",
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    )


def random_llama_8b(layers: int, device: str) -> Any:
    """Llama-3.1-8B's architecture with random weights (no Hub download): bf16 on a GPU, float32 on a CPU
    (a dry run of the script with few ``layers``)."""
    from transformers import LlamaForCausalLM

    with torch.device(device):
        return LlamaForCausalLM(llama_8b_config(layers)).to(torch.bfloat16 if device == "cuda" else torch.float32)


def lora_flops(examples: list[f.Example], layers: int) -> float:
    """Model FLOPs of a LoRA run over ``examples`` by bench_cost's training formula (:meth:`ModelShape.training`:
    4·N per token, attention 3× its forward, 6·N_lora, the LM head at the answer tokens only). Padding is
    not counted: it is no model work."""
    from bench_cost import example_shape, model_shape

    shape = model_shape("llama-3.1-8b", llama_8b_config(layers), load_params("paper").finetune.lora)
    return sum(shape.training(example_shape(e)) for e in examples)


def varied_examples(n: int, length: int, seed: int = 0) -> list[f.Example]:
    """Random token examples of lengths drawn between length/4 and length (biographies vary so; equal lengths
    would hide what padding costs), a 4-token answer each, half of them "augmented"."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 4, length + 1, (n,), generator=generator).tolist()
    return [f.Example(id=str(i), input_ids=tuple(torch.randint(0, 128000, (s,), generator=generator).tolist()),
                      answer_len=4, source=("original", "augmented")[i % 2], group="male") for i, s in enumerate(lengths)]


def unsloth_model(layers: int) -> tuple[Any, str]:
    """The same architecture through unsloth (saved once to a temporary directory), or None and why not."""
    try:
        from unsloth import FastLanguageModel
    except (ImportError, NotImplementedError, RuntimeError) as error:
        return None, f"{type(error).__name__}: {error}"
    ft = load_params("paper").finetune
    directory = tempfile.mkdtemp()
    random_llama_8b(layers, "cuda").save_pretrained(directory)
    model, _ = FastLanguageModel.from_pretrained(model_name=directory, max_seq_length=ft.max_length, dtype=torch.bfloat16,
                                                 load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(model, r=ft.lora.r, lora_alpha=ft.lora.alpha, lora_dropout=ft.lora.dropout,
                                             target_modules=list(ft.lora.target_modules), bias="none", random_state=0,
                                             use_gradient_checkpointing="unsloth")
    return model, ""


def llama_bench(steps: int, batch_size: int, length: int, layers: int, checkpointing: bool) -> None:
    """Ours (padded and packed), the alignment term, PEFT + Trainer and unsloth on the 8B architecture, side by side."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = load_params("paper", [f"finetune.batch_size={batch_size}", f"finetune.gradient_checkpointing={str(checkpointing).lower()}"])
    ft = params.finetune
    examples = varied_examples(steps * batch_size, length)
    warmup = varied_examples(3 * batch_size, length, seed=1)
    flops, tokens = lora_flops(examples, layers), sum(len(e.input_ids) for e in examples)
    alignment = params.mitigate.loss.weight
    runs = {
        "our loop, padded": (ft, None),
        "our loop, packed": (ft.model_copy(update={"packing": True}), None),
        f"our loop, packed + alignment (λ = {alignment:g})": (ft.model_copy(update={"packing": True}), alignment),
        "trainer (PEFT + Trainer)": (ft, None),
        "unsloth (its Trainer patches)": (ft, None),
    }
    rows = []
    for name, (settings, weight) in runs.items():
        if device == "cuda":
            torch.cuda.empty_cache()
        if name.startswith("unsloth"):
            model, why = unsloth_model(layers) if device == "cuda" else (None, "needs a CUDA GPU")
            if model is None:
                rows.append((name, None, None, why))
                continue
        else:
            model = fresh_peft(lambda: random_llama_8b(layers, device), settings)
            if settings.gradient_checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        ours = name.startswith("our")
        for batch in (warmup, examples):  # the warm-up is untimed: kernels, allocator
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = (loop_run(model, batch, None, 0, settings, 1, 0, weight) if ours
                       else trainer_run(model, batch, settings, 1, device == "cuda"))
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        rows.append((name, seconds, peak, ""))
        del model
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu (a dry run of the script, not a figure)"
    peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in card), float("nan"))
    print(f"random-init Llama-3.1-8B architecture ({layers} layers), LoRA r={ft.lora.r} on {len(ft.lora.target_modules)} "
          f"projections, {steps} steps of {batch_size} examples of {length // 4}-{length} tokens ({tokens} tokens), "
          f"gradient checkpointing {'on' if checkpointing else 'off'}, on {card}")
    print(f"MFU = model FLOPs (lora_flops: 4·N per token + causal attention 3x its forward + 6·N_lora + 4·V·d per "
          f"answer token) / s / {peak_tflops:g} TFLOP/s dense bf16")
    print(f"{'run':44} {'seconds':>8} {'tokens/s':>9} {'MFU':>6} {'peak GiB':>9}")
    for name, seconds, peak, why in rows:
        if seconds is None:
            print(f"{name:44} not run: {why}")
            continue
        print(f"{name:44} {seconds:8.1f} {tokens / seconds:9.0f} {flops / seconds / peak_tflops / 1e12:6.1%} {peak:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--examples", type=int, default=48, help="rows of the mix to train on (CPU)")
    parser.add_argument("--random-llama-8b", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=512, help="the longest example; lengths vary from a quarter of it")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (fewer: a dry run on a CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    if args.random_llama_8b:
        llama_bench(args.steps, args.batch_size, args.length, args.layers, args.gradient_checkpointing)
    else:
        cpu_bench(args.top_layers, args.epochs, args.examples)


if __name__ == "__main__":
    main()
