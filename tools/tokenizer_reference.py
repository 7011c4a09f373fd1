#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/fixtures/tokenizer/reference.json: the token ids LLaVA-1.5 feeds its model.

Reproduces, from a reading of the released LLaVA code, what happens to a prompt:
- `conv_vicuna_v1.get_prompt()` (separator style TWO: system + " ", then "ROLE: message" and
  " " after a user turn, "</s>" after an assistant turn, "ASSISTANT:" for the open turn; an
  empty message is written "ROLE:"), the image as "<image>\\n" before the first question;
- `tokenizer_image_token`: split at "<image>", tokenise each piece with the Hugging Face slow
  `LlamaTokenizer` (legacy): BOS, then the text split at its special tokens (<unk>, <s>, </s>),
  each as its id, and each stretch of text between them through SentencePiece on its own (so
  each gets the dummy prefix); keep BOS once and put the image id between the pieces.
The slow tokenizer is emulated here over python `sentencepiece`, because transformers 5 has no
SentencePiece-backed `LlamaTokenizer` any more. Decode cases are SentencePiece's own decoding.

    python3 tools/tokenizer_reference.py [tokenizer.model] [reference.json]
"""
import json
import sys

import sentencepiece as spm

IMAGE_TOKEN_INDEX = -200
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def vicuna_v1_prompt(messages):
    """messages: [(role, text or None)], roles alternating USER / ASSISTANT."""
    seps = [" ", "</s>"]
    out = SYSTEM + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            out += role + ": " + message + seps[i % 2]
        else:
            out += role + ":"
    return out


def hf_slow_encode(sp, text):
    """The slow LlamaTokenizer(legacy=True)(text).input_ids, BOS included."""
    specials = [sp.id_to_piece(i) for i in (sp.unk_id(), sp.bos_id(), sp.eos_id())]
    ids = [sp.bos_id()]
    while text:
        hits = [(text.find(p), -len(p), p) for p in specials if text.find(p) >= 0]
        if not hits:
            ids += sp.encode(text)
            break
        at, _, piece = min(hits)
        if at > 0:
            ids += sp.encode(text[:at])
        ids.append(sp.piece_to_id(piece))
        text = text[at + len(piece):]
    return ids


def tokenizer_image_token(sp, prompt, image_token_index=IMAGE_TOKEN_INDEX):
    chunks = [hf_slow_encode(sp, c) for c in prompt.split("<image>")]
    ids = [chunks[0][0]]  # every chunk starts with BOS: keep the first one only
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(image_token_index)
        ids += chunk[1:]
    return ids


def conversation(turns, images=1):
    """turns: [user, assistant, user, ...]; `images` "<image>\\n" before the first question."""
    messages = []
    for i, text in enumerate(turns):
        if i == 0:
            text = "<image>\n" * images + text
        messages.append(("USER" if i % 2 == 0 else "ASSISTANT", text))
    messages.append(("ASSISTANT", None))
    return messages


PROMPTS = [
    ("single turn with image", ["What is shown in this image?"], 1),
    ("text only", ["Is there a dog in the image?"], 0),
    ("multi-turn, earlier answers end with </s>",
     ["Describe the picture in detail.", "A cat is sitting on a wooden table.",
      "What colour is the car?", "The car is blue.", "How many people are there?"], 1),
    ("unicode and emoji", ["Café, naïve, über: 東京 🙂🚌 ✓"], 1),
    ("digits", ["There are 3 people and 2025 trees, 0.75 of 1000."], 1),
    ("leading and trailing spaces", ["   spaced question   "], 1),
    ("newlines", ["line one\nline two\n\n  indented\n"], 1),
    ("special pieces typed in the text", ["a <s> b </s>c<unk>"], 1),
    ("two images", ["Compare them."], 2),
    ("empty question", [""], 1),
]

TEXTS = ["hello world", " leading", "trailing ", "a  b\n c ", "", "\n", "Emoji 🙂!",
         "東京 and 北京", "12345", "</s> is not special here", "\u00e9\u0301"]

DECODES = [
    "The image shows a red bus.",
    " leading space",
    "🙂🚌 東京",
    "Café\nnaïve",
]


def main(model_path, out_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    out = {"model": "tests/fixtures/tokenizer/tokenizer.model", "image_token_index":
           IMAGE_TOKEN_INDEX, "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(),
           "vocab_size": sp.vocab_size(), "prompts": [], "encode": [], "decode": []}
    for name, turns, images in PROMPTS:
        messages = conversation(turns, images)
        prompt = vicuna_v1_prompt(messages)
        out["prompts"].append({"name": name, "turns": turns, "images": images,
                               "prompt": prompt, "ids": tokenizer_image_token(sp, prompt)})
    for text in TEXTS:
        out["encode"].append({"text": text, "ids": sp.encode(text),
                              "with_special_tokens": hf_slow_encode(sp, text)[1:]})
    # Decode cases: ids as generated (the encoding of a text), some with byte pieces split up.
    for text in DECODES:
        ids = sp.encode(text)
        out["decode"].append({"ids": ids, "text": sp.decode(ids)})
    broken = [sp.piece_to_id("<0xF0>"), sp.piece_to_id("<0x9F>"), sp.piece_to_id("<0x99>"),
              sp.encode("a")[0], sp.piece_to_id("<0xC3>")]
    out["decode"].append({"ids": broken, "text": sp.decode(broken)})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    args = sys.argv[1:] + [None, None]
    main(args[0] or "tests/fixtures/tokenizer/tokenizer.model",
         args[1] or "tests/fixtures/tokenizer/reference.json")
