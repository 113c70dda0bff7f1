"""The training format: a biography and its occupation as the tokens the student trains on (:func:`encode`),
and batches of them, from token ids or from cached activations: left-padded (:func:`collate`) or packed
end to end without padding (:func:`pack`, ``finetune.packing``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Finetune

if TYPE_CHECKING:
    import torch


class FinetuneError(RuntimeError):
    """Training cannot go on or produced a useless adapter; the message says what to change."""


@dataclass(frozen=True)
class Example:
    """One tokenised training or test example. ``answer_len`` counts the answer tokens and the end token."""

    id: str
    input_ids: tuple[int, ...]
    answer_len: int
    source: str
    group: str


def answer_text(occupation: str) -> str:
    return occupation.replace("_", " ")


def prompt_text(tokenizer: Any, hard_text: str, finetune: Finetune) -> str:
    """The chat-formatted question the student answers (the biography first, then the question)."""
    messages = [
        {"role": "system", "content": finetune.system},
        {"role": "user", "content": f"{hard_text}\n\n{finetune.instruction}"},
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, finetune: Finetune, with_answer: bool = True,
    group_field: str = "gender_name",
) -> list[Example]:
    """Tokenise rows; a biography too long for ``max_length`` is cut at its end, never the question. With
    ``finetune.objective: classify_and_write`` each row also gives its writing example (:func:`write_example`)."""
    examples = []
    for row in rows:
        answer = tokenizer(answer_text(row["occupation"]) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt = tokenizer(prompt_text(tokenizer, row["hard_text"], finetune), add_special_tokens=False)["input_ids"]
        overflow = len(prompt) + len(answer) - finetune.max_length
        if overflow > 0:
            prompt = tokenizer(
                prompt_text(tokenizer, _cut_tokens(tokenizer, row["hard_text"], overflow), finetune), add_special_tokens=False
            )["input_ids"]
        ids = prompt + answer if with_answer else prompt
        examples.append(Example(
            id=row["id"], input_ids=tuple(ids), answer_len=len(answer) if with_answer else 0,
            source=row.get("source", "original"), group=row.get(group_field, ""),
        ))
        if with_answer and finetune.objective == "classify_and_write":
            examples.append(write_example(row, tokenizer, finetune, group_field))
    return examples


WRITE_SUFFIX = "/write"  # id of a row's biography-writing example: "<row id>/write"


def write_prompt_text(tokenizer: Any, occupation: str, finetune: Finetune) -> str:
    """The chat-formatted request for a biography of someone in ``occupation`` (``finetune.write_instruction``)."""
    request = finetune.write_instruction.format(occupation=answer_text(occupation))
    return tokenizer.apply_chat_template([{"role": "user", "content": request}], add_generation_prompt=True, tokenize=False)


def write_example(row: Mapping[str, Any], tokenizer: Any, finetune: Finetune, group_field: str = "gender_name") -> Example:
    """The row as a writing example: the request, then its biography as the answer (the loss is on the
    biography and the end token). A biography longer than ``write_max_tokens`` (or than ``max_length``
    allows) keeps its first tokens and no end token: the student learns to begin biographies as long as
    it will ever be asked to write, and not to stop where a cut one stops."""
    prompt = tokenizer(write_prompt_text(tokenizer, row["occupation"], finetune), add_special_tokens=False)["input_ids"]
    biography = tokenizer(row["hard_text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = max(finetune.max_length - len(prompt), 1)
    biography = biography[: min(room, finetune.write_max_tokens or room)]
    return Example(id=f"{row['id']}{WRITE_SUFFIX}", input_ids=tuple(prompt + biography), answer_len=len(biography),
                   source=row.get("source", "original"), group=row.get(group_field, ""))


def _cut_tokens(tokenizer: Any, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[: max(len(ids) - n, 1)])


@dataclass
class Batch:
    """Left-padded inputs (token ids, or cached activations), the answer labels and the example flags."""

    inputs: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor  # [B, K-1] targets of the last K-1 positions, -100 where not an answer token
    window: int  # K: the positions whose logits are needed
    sources: list[str]
    groups: list[str]
    writes: bool = False  # holds writing examples: answers of ~70 tokens beside classification answers of 2-4

    def forward_kwargs(self) -> dict[str, torch.Tensor]:
        import torch

        key = "input_ids" if self.inputs.dtype == torch.long else "inputs_embeds"
        return {key: self.inputs, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def collate(
    examples: Sequence[Example], cached: Mapping[str, torch.Tensor] | None, device: Any, pad: int = 0,
    dtype: torch.dtype | None = None,
) -> Batch:
    """Left padding puts every answer at the end, so one window of K positions covers all answers.

    Cached activations are stored in the dtype that computed them (:func:`~.forward.lower_activations`);
    ``dtype`` is the student's: the batch is built in it and moved to ``device`` once, so a bf16 student
    on a GPU gets bf16 ``inputs_embeds`` there (default: the cache's own dtype).
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    window = max(e.answer_len for e in examples) + 1
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    tokens = torch.full((len(examples), width), pad, dtype=torch.long)
    for i, e in enumerate(examples):
        mask[i, width - len(e.input_ids) :] = 1
        tokens[i, width - len(e.input_ids) :] = torch.tensor(e.input_ids)
    if cached is not None:
        first = next(iter(cached.values()))
        inputs = torch.zeros((len(examples), width, first.shape[-1]), dtype=dtype or first.dtype)
        for i, e in enumerate(examples):
            inputs[i, width - len(e.input_ids) :] = cached[e.id]
    else:
        inputs = tokens
    labels = tokens[:, width - window + 1 :].clone()
    for i, e in enumerate(examples):
        labels[i, : window - 1 - e.answer_len] = -100
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(
        inputs.to(device), mask.to(device), position_ids.to(device), labels.to(device), window,
        [e.source for e in examples], [e.group for e in examples], any(e.id.endswith(WRITE_SUFFIX) for e in examples),
    )


@dataclass
class PackedBatch:
    """A batch as one row without padding: the examples end to end, positions restarting at 0 in each.

    Why no attention mask: given position ids that restart and no 2-D mask, transformers keeps attention
    within each example, by a block-causal mask (SDPA, eager) or by passing the boundaries to flash
    attention's variable-length kernels. The loss reads ``reads`` only: the positions whose next token is
    an answer token, so the LM head runs there and nowhere else.
    """

    inputs: torch.Tensor  # [1, N] token ids or [1, N, H] cached activations
    position_ids: torch.Tensor  # [1, N]
    reads: torch.Tensor  # [M] positions whose next token is an answer token
    targets: torch.Tensor  # [M] those answer tokens
    lengths: list[int]
    sources: list[str]
    groups: list[str]

    def forward_kwargs(self) -> dict[str, torch.Tensor]:
        import torch

        key = "input_ids" if self.inputs.dtype == torch.long else "inputs_embeds"
        return {key: self.inputs, "position_ids": self.position_ids}


def pack(
    examples: Sequence[Example], cached: Mapping[str, torch.Tensor] | None, device: Any, pad: int = 0,
    dtype: torch.dtype | None = None,
) -> PackedBatch:
    """The examples of a batch packed into one row (:class:`PackedBatch`); the arguments are :func:`collate`'s
    (``pad`` is unused: nothing is padded)."""
    import torch

    lengths = [len(e.input_ids) for e in examples]
    ends = torch.tensor(lengths).cumsum(0).tolist()
    reads = [p for e, end in zip(examples, ends) for p in range(end - e.answer_len - 1, end - 1)]
    targets = [t for e in examples for t in e.input_ids[len(e.input_ids) - e.answer_len :]]
    if cached is not None:
        inputs = torch.cat([cached[e.id] for e in examples]).to(dtype or cached[examples[0].id].dtype)[None]
    else:
        inputs = torch.tensor([t for e in examples for t in e.input_ids])[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    return PackedBatch(
        inputs.to(device), positions.to(device), torch.tensor(reads, device=device), torch.tensor(targets, device=device),
        lengths, [e.source for e in examples], [e.group for e in examples],
    )
