#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch autograd reference for dynllava's training operators (train/).

Writes tests/fixtures/train_reference.json, which tests/unit/test_train_reference.cpp compares
against the C++ CPU implementations. Everything is computed in float64 with torch autograd,
following the released Dynamic-LLaVA code (Osilly/dynamic_llava):

* MaskedSoftmax: `softmax_with_policy` as released (policy [B, N, 1] broadcast over key
  columns, diagonal forced to 1 with `policy + (1 - policy) * eye`, causal mask as an additive
  -inf bias before the row max, eps = 1e-6, eps / N added to every column). Gradients w.r.t.
  the scores and the keep vector (`policy`).
* Hard Gumbel-Softmax: the body of `torch.nn.functional.gumbel_softmax(hard=True)` over
  `log_softmax(logits)`, with the Gumbel noise given (so no RNG has to match). Forward value
  `y_hard - y_soft.detach() + y_soft`, channel 0; gradient w.r.t. the logits.
* Budget loss: the trainer's image and output-text mask losses (target rate for answers with
  at least 50 tokens, the detached own mean otherwise), weight 100, and its mask gradients.

Regenerate (needs torch; `pip install torch`):

    python3 tools/train_reference.py            # writes tests/fixtures/train_reference.json
"""
import json
import math
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(20241125)
DT = torch.float64
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "train_reference.json"


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def softmax_with_policy(attn, policy, eps=1e-6):
    # as released: attn [B, H, N, N] (already causal-biased), policy [B, N, 1]
    B, N, _ = policy.size()
    attn_policy = policy.reshape(B, 1, 1, N)
    eye = torch.eye(N, dtype=attn_policy.dtype).view(1, 1, N, N)
    attn_policy = attn_policy + (1.0 - attn_policy) * eye
    max_att = torch.max(attn, dim=-1, keepdim=True)[0]
    attn = attn - max_att
    attn = attn.exp() * attn_policy
    return (attn + eps / N) / (attn.sum(dim=-1, keepdim=True) + eps)


def masked_softmax_case(n, heads, causal, soft_keep, scale):
    scores = (torch.randn(1, heads, n, n, dtype=DT) * scale).requires_grad_(True)
    if soft_keep:
        keep = torch.rand(1, n, 1, dtype=DT)
    else:
        keep = (torch.rand(1, n, 1, dtype=DT) < 0.5).to(DT)
    keep.requires_grad_(True)
    upstream = torch.randn(1, heads, n, n, dtype=DT)
    bias = torch.zeros(1, 1, n, n, dtype=DT)
    if causal:
        bias.masked_fill_(torch.ones(n, n, dtype=torch.bool).tril().logical_not(), float("-inf"))
    attn = softmax_with_policy(scores + bias, keep)
    (attn * upstream).sum().backward()
    return {
        "n": n, "heads": heads, "causal": causal, "eps": 1e-6,
        "scores": flat(scores), "keep": flat(keep), "d_attn": flat(upstream),
        "attn": flat(attn), "d_scores": flat(scores.grad), "d_keep": flat(keep.grad),
    }


def gumbel_case(n, tau, scale):
    logits = (torch.randn(n, 2, dtype=DT) * scale).requires_grad_(True)
    u = torch.rand(n, 2, dtype=DT).clamp(1e-7, 1 - 1e-7)
    noise = -torch.log(-torch.log(u))
    upstream = torch.randn(n, dtype=DT)
    # body of F.gumbel_softmax(hard=True) over log_softmax(logits), with the noise given
    y_soft = ((F.log_softmax(logits, dim=-1) + noise) / tau).softmax(-1)
    index = y_soft.max(-1, keepdim=True)[1]
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    ret = y_hard - y_soft.detach() + y_soft
    keep = ret[:, 0]
    (keep * upstream).sum().backward()
    return {
        "tau": tau, "logits": flat(logits), "noise": flat(noise), "d_keep": flat(upstream),
        "keep": flat(y_hard[:, 0]), "soft": flat(y_soft[:, 0]), "d_logits": flat(logits.grad),
    }


def budget_case(image_lengths, output_lengths, image_rate=0.2, output_rate=0.5, min_tokens=50,
                weight=100.0):
    img = [torch.rand(n, dtype=DT).requires_grad_(True) for n in image_lengths]
    out = [torch.rand(n, dtype=DT).requires_grad_(True) for n in output_lengths]
    # trainer: image term mean over the batch of (rate - mean)^2
    img_ratio = torch.stack([m.mean() for m in img])
    image_loss = ((image_rate - img_ratio) ** 2).mean()
    out_ratio = torch.stack([m.mean() for m in out])
    target = torch.tensor([output_rate if m.shape[0] >= min_tokens else m.mean().item()
                           for m in out], dtype=DT)
    text_loss = ((target - out_ratio) ** 2).mean()
    loss = weight * image_loss + weight * text_loss
    loss.backward()
    return {
        "image_lengths": image_lengths, "output_lengths": output_lengths,
        "image_keep_rate": image_rate, "output_keep_rate": output_rate,
        "min_output_tokens": min_tokens, "weight": weight,
        "image_mask": [v for m in img for v in flat(m)],
        "output_mask": [v for m in out for v in flat(m)],
        "loss": loss.item(), "d_image_mask": [v for m in img for v in flat(m.grad)],
        "d_output_mask": [v for m in out for v in flat(m.grad)],
    }


def main():
    fixture = {
        "generator": "tools/train_reference.py",
        "torch_version": torch.__version__,
        "masked_softmax": [
            masked_softmax_case(1, 1, True, False, 1.0),
            masked_softmax_case(5, 1, True, False, 1.0),
            masked_softmax_case(7, 2, True, True, 3.0),
            masked_softmax_case(6, 3, False, False, 2.0),
            masked_softmax_case(9, 2, True, False, 20.0),
        ],
        "gumbel": [gumbel_case(16, 1.0, 1.0), gumbel_case(16, 0.1, 2.0),
                   gumbel_case(8, math.pow(0.1, 0.37), 5.0)],
        "budget": [budget_case([5, 8, 3], [60, 12, 50]),
                   budget_case([4], [49], image_rate=0.3, output_rate=0.4, weight=2.0),
                   budget_case([6, 6], [70, 55], min_tokens=0)],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
