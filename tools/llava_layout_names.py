#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the tensor names that transformers really uses for a tiny LlavaForConditionalGeneration
(2 LLaMA layers, 2 CLIP layers), so the tests can check the layout tables against them:

    <out>/hf_saved_names.txt   the keys `save_pretrained` writes (model.safetensors)
    <out>/hf_state_names.txt   the keys of the model's in-memory `state_dict()`
    <out>/hf_tiny_config.json  the config.json `save_pretrained` writes

    python3 tools/llava_layout_names.py tests/fixtures/configs

Needs torch, transformers and safetensors (PyPI); deterministic (names only, no weights kept).
"""
import json
import os
import sys
import tempfile

from safetensors import safe_open
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration


def main(out: str) -> None:
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=28, patch_size=14,
                              projection_dim=16)
    text = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, vocab_size=600, max_position_embeddings=256)
    model = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_index=599))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
            saved = sorted(f.keys())
        with open(os.path.join(tmp, "config.json")) as f:
            config = json.load(f)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "hf_saved_names.txt"), "w") as f:
        f.write("".join(n + "\n" for n in saved))
    with open(os.path.join(out, "hf_state_names.txt"), "w") as f:
        f.write("".join(n + "\n" for n in sorted(model.state_dict().keys())))
    with open(os.path.join(out, "hf_tiny_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/configs")
