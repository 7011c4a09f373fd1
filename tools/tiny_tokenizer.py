#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trains the tiny LLaMA-style SentencePiece model that the tests and the tiny LLaVA fixtures use.

LLaMA's conventions: BPE with byte fallback, digits split, a dummy prefix, no normalisation,
<unk> 0, <s> 1, </s> 2, no pad. The vocabulary has 500 pieces (3 specials, 256 byte pieces,
241 learned). Deterministic: the corpus is written below and training runs on one thread.

    python3 tools/tiny_tokenizer.py tests/fixtures/tokenizer/tokenizer.model
"""
import io
import sys

import sentencepiece as spm

CORPUS = """\
A chat between a curious user and an artificial intelligence assistant. The assistant gives \
helpful, detailed, and polite answers to the user's questions.
USER: What is shown in this image? ASSISTANT: The image shows a red bus parked on a street.
USER: Describe the picture in detail. ASSISTANT: A cat is sitting on a wooden table next to a cup.
USER: How many people are there? ASSISTANT: There are 3 people standing near the 2 trees.
USER: What colour is the car? ASSISTANT: The car is blue, and the sky behind it is grey.
Is there a dog in the image? Yes, a small brown dog is lying on the grass in the park.
The quick brown fox jumps over the lazy dog. The image is taken at night in a city.
Answer the question using a single word or phrase. Please describe the scene briefly.
Café, naïve, über: words with accents. 東京 and 北京 are cities. Emoji 🙂 and 🚌 appear too.
"""


def main(out: str) -> None:
    lines = [line for line in CORPUS.splitlines() if line] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=500,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=True,
        num_threads=1,
        minloglevel=2,
    )
    with open(out, "wb") as f:
        f.write(model.getvalue())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tokenizer/tokenizer.model")
