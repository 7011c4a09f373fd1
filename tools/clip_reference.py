#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Reference outputs of Hugging Face transformers' CLIPVisionModel and of LLaVA-1.5's
`mlp2x_gelu` projector for dynllava's CLIP tests. Writes tests/fixtures/clip/:

  model.safetensors     a tiny random CLIPVisionModel's state dict under `vision_model.*` names,
                        as the published `openai/clip-vit-*` checkpoints and older transformers
                        releases name it (transformers 5 `save_pretrained` drops the prefix), F32
  config.json           its CLIPVisionConfig, as `save_pretrained` writes it
  projector.safetensors a random torch.nn.Sequential(Linear(D, H), GELU(), Linear(H, H)) under
                        the original LLaVA names `model.mm_projector.{0,2}.{weight,bias}`
  reference.safetensors inputs and outputs (F32):
                          pixel_values        [B, C, S, S] seeded N(0, 1)
                          hidden_states.{l}   [B, N + 1, D] `output_hidden_states[l]`, l = 0..layers
                          projector_input     [B * N, D] hidden_states.{layers - 1}, class token dropped
                          projector_output    [B * N, H] the projector applied to it
  expected.json         the sizes above (the test checks them against the files)

Sizes: image 56, patch 14 (16 patches), hidden 32, 3 layers, 4 heads, MLP 64, quick_gelu,
LayerNorm eps 1e-5, projector H = 48, batch 2. Eager attention, float32, CPU.
Regenerate (PyPI: torch, transformers, safetensors):  python3 tools/clip_reference.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "clip")
BATCH = 2
TEXT_HIDDEN = 48


def main():
    torch.manual_seed(1234)
    cfg = CLIPVisionConfig(image_size=56, patch_size=14, num_channels=3, hidden_size=32,
                           num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5,
                           attn_implementation="eager")
    model = CLIPVisionModel(cfg).eval().float()
    # The default init gives near-constant LayerNorms and tiny position embeddings; spread every
    # parameter so that each part of the tower changes the output measurably.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif "embedding" in name and "patch" not in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                fan_in = p.shape[1:].numel() if p.dim() > 1 else p.numel()
                p.copy_((torch.rand_like(p) * 2 - 1) / fan_in ** 0.5)

    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    state = {k if k.startswith("vision_model.") else "vision_model." + k: v.contiguous()
             for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(state, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})

    gen = torch.Generator().manual_seed(99)
    pixels = torch.randn(BATCH, cfg.num_channels, cfg.image_size, cfg.image_size, generator=gen)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    hidden = out.hidden_states  # layers + 1 tensors of [B, N + 1, D]
    assert len(hidden) == cfg.num_hidden_layers + 1

    projector = torch.nn.Sequential(torch.nn.Linear(cfg.hidden_size, TEXT_HIDDEN),
                                    torch.nn.GELU(),
                                    torch.nn.Linear(TEXT_HIDDEN, TEXT_HIDDEN)).eval()
    feats = hidden[cfg.num_hidden_layers - 1][:, 1:, :].reshape(-1, cfg.hidden_size)
    with torch.no_grad():
        projected = projector(feats)
    save_file({f"model.mm_projector.{i}.{k}": v.contiguous()
               for i in (0, 2) for k, v in projector[i].state_dict().items()},
              os.path.join(OUT, "projector.safetensors"))

    ref = {"pixel_values": pixels.contiguous(),
           "projector_input": feats.contiguous(),
           "projector_output": projected.contiguous()}
    for i, h in enumerate(hidden):
        ref[f"hidden_states.{i}"] = h.contiguous()
    save_file(ref, os.path.join(OUT, "reference.safetensors"))

    expected = {"batch": BATCH, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
                "channels": cfg.num_channels, "hidden": cfg.hidden_size,
                "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                "intermediate": cfg.intermediate_size, "layer_norm_eps": cfg.layer_norm_eps,
                "activation": cfg.hidden_act, "text_hidden": TEXT_HIDDEN,
                "projector_layer": cfg.num_hidden_layers - 1}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in os.listdir(OUT):
        os.chmod(os.path.join(OUT, name), 0o644)


if __name__ == "__main__":
    main()
