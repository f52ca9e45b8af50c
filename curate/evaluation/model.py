"""The base model with its adapters: greedy replies, and the loss of reference replies (teacher-forced).

torch, transformers and peft are imported inside the functions. Adapters are loaded side by side as
a0, a1, ...; `adapter=None` means the bare base.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from curate.embedded import render
from curate.train.data import IGNORE

LOSS_TOKENS = 4096  # padded tokens scored at once: bounds the (tokens x vocabulary) logits in memory


def load(model_path: str, dirs: list[Path]) -> Any:
    from curate.train.stage import cuda_available, load_base

    cuda = cuda_available()
    model = load_base(model_path, qlora=False, cuda=cuda, bf16=cuda)
    model.config.use_cache = True  # generation wants the KV cache back
    if dirs:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(dirs[0]), adapter_name="a0")
        for k, d in enumerate(dirs[1:], start=1):
            model.load_adapter(str(d), adapter_name=f"a{k}")
    if cuda:
        model = model.to("cuda")
    model.eval()
    return model


@contextlib.contextmanager
def using(model: Any, adapter: str | None) -> Iterator[None]:
    """The model as the bare base (adapter None) or with one adapter active, without gradients."""
    import torch

    if adapter is None:
        ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    else:
        model.set_adapter(adapter)
        ctx = contextlib.nullcontext()
    with ctx, torch.no_grad():
        yield


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], adapter: str | None, max_new_tokens: int,
             batch_size: int, advance: Callable[[int], Any]) -> list[str]:
    """Greedy replies, batched by similar length with left padding."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    with using(model, adapter):
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            advance(len(idx))
    return out


def reference_example(tokenizer: Any, messages: list[dict], tools: str | None) -> dict[str, list[int]] | None:
    """The conversation through its last assistant reply, labelled on that reply's tokens only.

    The labels are training's (curate.train.data): the reply's content and end-of-turn, not its role
    header; earlier assistant turns are context here, not scored. None when there is no assistant reply.
    """
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    r = render(tokenizer, messages[: last + 1], tools)
    end = max((k for k, m in enumerate(r.assistant_mask) if m), default=None)
    if end is None:
        return None
    start = end
    while start > 0 and r.assistant_mask[start - 1]:
        start -= 1  # the last contiguous run of assistant tokens is the reference reply
    labels = [t if start <= k <= end else IGNORE for k, t in enumerate(r.input_ids)]
    return {"input_ids": r.input_ids, "labels": labels}


def reference_loss(model: Any, examples: list[dict[str, list[int]]], adapter: str | None, batch_size: int,
                   pad: int, advance: Callable[[int], Any]) -> list[tuple[float, int]]:
    """Per example: the summed negative log-likelihood of its labelled tokens and how many there are."""
    import torch
    import torch.nn.functional as F

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    device = next(model.parameters()).device
    with using(model, adapter):
        s = 0
        while s < len(order):
            idx = [order[s]]
            while (s + len(idx) < len(order) and len(idx) < batch_size
                   and (len(idx) + 1) * len(examples[order[s + len(idx)]]["input_ids"]) <= LOSS_TOKENS):
                idx.append(order[s + len(idx)])
            s += len(idx)
            width = max(len(examples[i]["input_ids"]) for i in idx)
            ids = torch.tensor([examples[i]["input_ids"] + [pad] * (width - len(examples[i]["input_ids"])) for i in idx],
                               device=device)
            labels = torch.tensor([examples[i]["labels"] + [IGNORE] * (width - len(examples[i]["labels"])) for i in idx],
                                  device=device)
            mask = (torch.arange(width, device=device)[None, :]
                    < torch.tensor([len(examples[i]["input_ids"]) for i in idx], device=device)[:, None]).long()
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            target = labels[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
            for row, i in enumerate(idx):
                out[i] = (float(nll[row].sum()), int((target[row] != IGNORE).sum()))
            advance(len(idx))
    return out


def loss_summary(losses: list[tuple[float, int]]) -> tuple[float | None, float | None]:
    """Token-weighted mean loss (as training's eval_loss) and its perplexity, over every example."""
    tokens = sum(n for _, n in losses)
    if not tokens:
        return None, None
    loss = sum(x for x, _ in losses) / tokens
    return round(loss, 4), round(math.exp(loss), 4)
