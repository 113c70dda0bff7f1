"""The top layer at the answer positions only, scoring batched by length, and the merged adapter: the
numbers are the full forward's (up to float rounding), gradients included, and come back in order."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from biasutils import evaluate as e
from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.finetune.training import peft_wrapping
from biasutils.models import load_causal_lm
from biasutils.store import Artifact, Store
from biasutils.tasks import Item

N_LAYERS, TOP = 4, 3  # the bottom layer frozen and cached; LoRA on the top three
ATOL = 1e-5
LENGTHS = [(23, 3), (9, 2), (31, 5), (4, 1), (17, 4), (12, 2)]  # (tokens, answer tokens): window 6 > 4 tokens


def _tiny(model_type: str, vocab: int = 96) -> torch.nn.Module:
    """A random model of the family, shaped like SmolLM2 in miniature (grouped-query attention, tied embeddings)."""
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),  # biased q/k/v projections
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),  # q/k norms
    }[model_type]
    config = config_class(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=N_LAYERS,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                          max_position_embeddings=256)
    torch.manual_seed(0)
    return model_class(config).eval()


def _with_lora(model: torch.nn.Module, top: int = TOP, dropout: float = 0.0) -> torch.nn.Module:
    """The production adapter on the top layers, its B matrices drawn at random (fresh ones are zero)."""
    from peft import get_peft_model

    ft = load_params("smoke", [f"finetune.lora.top_layers={top}", f"finetune.lora.dropout={dropout}"]).finetune
    with peft_wrapping():
        peft_model = get_peft_model(model, f.lora_config(ft, N_LAYERS, N_LAYERS - top))
    generator = torch.Generator().manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return peft_model


def _examples(vocab: int = 96) -> list[f.Example]:
    generator = torch.Generator().manual_seed(2)
    return [f.Example(f"x{i}", tuple(torch.randint(1, vocab, (n,), generator=generator).tolist()), answer, "original", "")
            for i, (n, answer) in enumerate(LENGTHS)]


def _cache(model: torch.nn.Module, examples: list[f.Example], n_frozen: int = N_LAYERS - TOP) -> dict[str, torch.Tensor]:
    return {x.id: h for x, h in zip(examples, f.lower_activations(model, examples, n_frozen))}


@contextmanager
def _positions_seen_by_top_mlp(model: torch.nn.Module):
    """The sequence lengths the top layer's MLP runs on, call by call."""
    seen: list[int] = []
    mlp = f.decoder_parts(model)[0].layers[N_LAYERS - 1].mlp
    handle = mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    try:
        yield seen
    finally:
        handle.remove()


def _zero_extra(hidden, mask, sources, groups):  # an extra loss term of 0: step_loss then runs the full forward
    return hidden.sum() * 0.0


def _loss_and_grads(model, batch, extra=None):
    model.zero_grad()
    loss, _ = f.step_loss(model, batch, (N_LAYERS - TOP, N_LAYERS), extra)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_the_windowed_top_layer_gives_the_full_forwards_logits_loss_and_every_lora_gradient(model_type) -> None:
    model = _with_lora(_tiny(model_type))
    examples = _examples()
    cached = _cache(model, examples)
    batch = f.collate(examples, cached, "cpu")
    layers = (N_LAYERS - TOP, N_LAYERS)
    width = batch.inputs.shape[1]
    valid = batch.attention_mask[:, -batch.window : -1].bool()  # the short example's padding has no logits to compare

    with torch.inference_mode():
        with _positions_seen_by_top_mlp(model) as seen:
            fast = f.answer_logits(model, batch, layers)
        assert seen == [batch.window]  # the top layer's output is computed at the window only
        full = f.head_logits(model, f.final_hidden(model, batch, layers)[:, -batch.window : -1])
        # and both are the whole model's, run on the tokens without any cache
        tokens = f.collate(examples, None, "cpu")
        whole = model(**tokens.forward_kwargs()).logits[:, -batch.window : -1].float()
    assert fast.shape == full.shape == whole.shape
    assert torch.allclose(fast[valid], full[valid], atol=ATOL), float((fast - full)[valid].abs().max())
    assert torch.allclose(fast[valid], whole[valid], atol=ATOL), float((fast - whole)[valid].abs().max())

    model.train()
    with _positions_seen_by_top_mlp(model) as seen:
        fast_loss, fast_grads = _loss_and_grads(model, batch)
        full_loss, full_grads = _loss_and_grads(model, batch, _zero_extra)
    assert seen == [batch.window, width]
    assert fast_loss == pytest.approx(full_loss, abs=ATOL)
    assert len(fast_grads) == TOP * 7 * 2  # A and B of q, k, v, o, gate, up, down in each adapted layer
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(fast_grads[name], grad, atol=ATOL, rtol=1e-4), (name, float((fast_grads[name] - grad).abs().max()))


def test_a_single_adapted_layer_runs_on_the_cached_activations_directly() -> None:
    model = _with_lora(_tiny("llama"), top=1)
    examples = _examples()
    batch = f.collate(examples, _cache(model, examples, N_LAYERS - 1), "cpu")
    with torch.inference_mode():
        with _positions_seen_by_top_mlp(model) as seen:
            fast = f.answer_logits(model, batch, (N_LAYERS - 1, N_LAYERS))
        whole = model(**f.collate(examples, None, "cpu").forward_kwargs()).logits[:, -batch.window : -1].float()
    valid = batch.attention_mask[:, -batch.window : -1].bool()
    assert seen == [batch.window]
    assert torch.allclose(fast[valid], whole[valid], atol=ATOL)


@pytest.mark.parametrize("case", ["lora dropout", "gradient checkpointing", "unsupported model type", "no frozen layers"])
def test_where_the_shortcut_would_compute_something_else_the_full_forward_runs(case, monkeypatch) -> None:
    """LoRA dropout would draw other masks over fewer positions, checkpointing drops the cache, an unknown
    architecture may mix positions elsewhere: there the top layer runs everywhere, with the same loss."""
    model = _with_lora(_tiny("llama"), dropout=0.1 if case == "lora dropout" else 0.0)
    examples = _examples()
    batch = f.collate(examples, _cache(model, examples), "cpu")
    layers = (N_LAYERS - TOP, N_LAYERS)
    if case == "gradient checkpointing":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if case == "unsupported model type":
        monkeypatch.setattr(f.forward, "WINDOWED_MODEL_TYPES", frozenset())  # where final_hidden looks it up
    if case == "no frozen layers":
        batch, layers = f.collate(examples, None, "cpu"), None
    model.train()
    with _positions_seen_by_top_mlp(model) as seen:
        torch.manual_seed(0)
        loss, _ = f.step_loss(model, batch, layers)
    assert seen == [batch.inputs.shape[1]]
    model.eval()  # no dropout: the windowed path's loss for comparison
    with torch.inference_mode():
        reference = f.step_loss(model, f.collate(examples, _cache(model, examples), "cpu"), (N_LAYERS - TOP, N_LAYERS))[0]
    if case != "lora dropout":
        assert float(loss.detach()) == pytest.approx(float(reference), abs=ATOL)


# ---------------------------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def scoring_setup(tmp_path_factory):
    """The smoke profile's tokenizer, a 4-layer random Llama over its vocabulary with LoRA on the top 3."""
    store = Store(tmp_path_factory.mktemp("store"))
    params = load_params("smoke", [f"finetune.lora.top_layers={TOP}"])
    _, tokenizer = load_causal_lm(params.models.student, store, "cpu")
    model = _with_lora(_tiny("llama", vocab=len(tokenizer))).eval()
    return params, store, tokenizer, model


def _scored_cache(model, items, tokenizer, params) -> dict[str, torch.Tensor]:
    sequences = e.scored_sequences(items, tokenizer, params)
    examples = [f.Example(s.key, s.ids, 0, "", "") for s in sequences]
    return _cache(model, examples)


def _alone_logprobs(model, ids: list[int]) -> torch.Tensor:
    """Next-token log-probabilities at every position of one unpadded sequence, by the whole model."""
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


WORDS = "the nurse said she was tired after a long night shift at the old city hospital by the river".split()


def _texts(n: int) -> list[str]:
    generator = torch.Generator().manual_seed(3)
    return [" ".join(WORDS[: int(torch.randint(2, len(WORDS), (1,), generator=generator))]) for _ in range(n)]


def test_first_token_choice_scores_come_back_in_item_order_and_equal_each_item_scored_alone(scoring_setup) -> None:
    params, _, tokenizer, model = scoring_setup
    options = ("architect", "dentist", "nurse", "painter", "professor", "software engineer")
    items = [Item(f"o{i}", "choice", text, options, {"format": "occupation"}) for i, text in enumerate(_texts(9))]
    cached = _scored_cache(model, items, tokenizer, params)
    lengths = [len(e.chat_ids(tokenizer, item, params)) for item in items]
    assert sorted(lengths) != lengths and len(set(lengths)) > 3  # batching by length reorders them
    scores = e.Scorer(model, tokenizer, params, cached, batch_size=2).choice(items)
    for item, row in zip(items, scores):
        logprobs = _alone_logprobs(model, e.chat_ids(tokenizer, item, params))[-1]
        expected = [float(logprobs[tokenizer(o, add_special_tokens=False)["input_ids"][0]]) for o in options]
        assert row == pytest.approx(expected, abs=ATOL * 10)
    full = e.Scorer(model, tokenizer, params, batch_size=4).choice(items)  # no cache: the whole model, batched
    assert torch.allclose(torch.tensor(scores), torch.tensor(full), atol=ATOL * 10)


def test_sequence_log_likelihoods_come_back_in_order_and_equal_each_text_scored_alone(scoring_setup) -> None:
    params, _, tokenizer, model = scoring_setup
    items = [Item(f"s{i}", "sequences", texts=tuple(_texts(7)[i : i + 2])) for i in range(5)]
    cached = _scored_cache(model, items, tokenizer, params)
    scores = e.Scorer(model, tokenizer, params, cached, batch_size=3).sequences(items)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for item, row in zip(items, scores):
        expected = []
        for text in item.texts:
            ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
            logprobs = _alone_logprobs(model, ids)
            expected.append(sum(float(logprobs[t - 1, ids[t]]) for t in range(max(len(bos), 1), len(ids))))
        assert row == pytest.approx(expected, abs=1e-4)


def test_generation_answers_come_back_in_item_order(scoring_setup) -> None:
    params, _, tokenizer, model = scoring_setup
    items = [Item(f"g{i}", "generate", text) for i, text in enumerate(_texts(5))]
    batched = e.Scorer(model, tokenizer, params, batch_size=2).generate(items, max_new_tokens=4)
    alone = [e.Scorer(model, tokenizer, params).generate([item], max_new_tokens=4)[0] for item in items]
    assert batched == alone


def test_the_evaluated_student_has_its_adapter_merged_with_the_same_scores(scoring_setup, tmp_path) -> None:
    from peft import PeftModel, get_peft_model

    params, store, tokenizer, _ = scoring_setup
    base, _ = load_causal_lm(params.models.student, store, "cpu")
    n_layers = f.decoder_parts(base)[0].config.num_hidden_layers
    smoke = load_params("smoke")  # its tiny model has 2 layers: adapt the top one
    with peft_wrapping():
        adapter = get_peft_model(base, f.lora_config(smoke.finetune, n_layers, f.frozen_layer_count(base, smoke.finetune)))
    for name, param in adapter.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=torch.Generator().manual_seed(4)) * 0.5
    adapter.save_pretrained(str(tmp_path / "adapter"))
    artifact = Artifact("finetune", "test", tmp_path)

    merged, _ = f.load_student(smoke, artifact, store, "cpu")
    separate, _ = f.load_student(smoke, artifact, store, "cpu", merge=False)
    bare, _ = f.load_student(smoke, None, store, "cpu")
    assert isinstance(separate, PeftModel) and not isinstance(merged, PeftModel)
    assert not any("lora" in name for name, _ in merged.named_modules())
    items = [Item(f"s{i}", "sequences", texts=(text,)) for i, text in enumerate(_texts(4))]
    scores = {name: torch.tensor(e.Scorer(m, tokenizer, smoke).sequences(items))
              for name, m in (("merged", merged), ("separate", separate), ("bare", bare))}
    assert torch.allclose(scores["merged"], scores["separate"], atol=1e-4)
    assert not torch.allclose(scores["merged"], scores["bare"], atol=1e-2)  # the adapter is in the weights
