#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trains the bundled tiny Dynamic-LLaVA (models/tiny-dynamic-llava) on a synthetic visual
question-answering set that it generates, and exports it in the original Dynamic-LLaVA layout.

    python3 tools/train_tiny_llava.py [--out models/tiny-dynamic-llava] [--seed 20261201]
                                      [--dense-steps N] [--dynamic-steps N] [--threads 1]

Needs PyTorch, transformers (only for the self-check against its CLIP / LLaMA), sentencepiece,
safetensors, Pillow and numpy (PyPI). CPU only, deterministic from --seed (fixed thread count,
torch.use_deterministic_algorithms) on the same kind of CPU (torch's CPU kernels, and so the
last bits of the results, depend on the instruction set).

Data. 336x336 pictures, plain slate background, 1 to 3 objects of distinct shapes (circle,
square, triangle, cross) in 4 colours (red, green, blue, yellow), each filling a 2 x 2 block of
the 14 px patch grid (24..28 px), blocks a patch apart: every object patch then holds a corner of
its object's outline, which the tiny tower learns to tell apart in a minute (with larger objects
the interior patches look alike for every shape, and a 2-layer tower trained for minutes could
not learn shape at all).
Questions with one-word answers: "How many shapes are there?" (1/2/3), "Is there a <shape>?"
(yes/no), "What colour is the <shape>?" (a shape in the picture), "What shape is shown?" (one
object only), and, in training only, "Describe the image." (the objects left to right, e.g.
"a red circle and a blue cross"), whose longer answers train the output-text predictor. Training
pictures come from an endless seeded stream; the held-out pictures from another seed, never seen
in training. The held-out set is written to `<out>/eval/heldout.jsonl` (one question a line, see
`write_heldout`) with its pictures under `<out>/eval/images/`.

Model. LLaVA-1.5 shaped (model/clip.hpp, model/llama.hpp, model/projector.hpp,
score/*_predictor.hpp read it): a CLIP ViT tower at 336 px with 14 px patches (576 image rows),
pre-LayerNorm, quick_gelu, class token, features of layer -2 without the class token; the
`mlp2x_gelu` projector; a LLaMA decoder (RMSNorm, RoPE rotate-half, SwiGLU, no biases); the
Dynamic-LLaVA image and output-text predictors at reduced width (`sparse_config` d_model 64).
The tokenizer is a SentencePiece BPE model trained here on the data's text and the vicuna_v1
system prompt with LLaMA's conventions (those of tools/tiny_tokenizer.py). Prompts are vicuna_v1
with `<image>` expanded to 576 rows; a training sequence holds every question about one picture
as question-answer turns in random order (LLaVA's multi-turn format), the loss is on the answers
and their "</s>".

Training. First the vision tower alone, on per-patch labels (each patch's object colour or
background, and its object's shape: linear heads on the tower's rows, dropped at export), so that
the decoder starts from rows that already tell the objects apart; these per-patch losses stay on
in the later phases. Then (METHOD.md section 6) dense (causal attention everywhere), then Dynamic-LLaVA:
at the sparse layer (2) the image predictor decides per image row and the output-text predictor
per answer token, by hard Gumbel-Softmax over log_softmax(logits) with straight-through
gradients, temperature 0.1 ** (step / steps); layers >= 2 use MaskedSoftmax with the decisions
as a key mask; loss = CE + 100 * [ mean_b (0.2 - mean(M_img_b))^2 + mean_b (t_b - mean(M_out_b))^2 ]
where t_b = 0.5 when the sequence has at least `output_text_len_for_training` answer tokens (12
here, 50 in the released configs: our answers are short) and the term is zero otherwise (the
output mask is then all ones). A short run adds two training-only terms the released recipe does
not have: the binding loss (below) and the image predictor's keep margin (logit0 - logit1) against the object patches (binary
cross-entropy, --predictor-aux-weight), because a few hundred steps of the language-model loss
alone do not tell the predictor which rows matter (the rows before the sparse layer already carry
the picture). Defaults: tower 250 steps of 12 pictures, dense 1000 and Dynamic-LLaVA 120 steps
of 6 sequences, one torch thread.

The binding loss (--bind-weight 0.3 --bind-layer 3 --bind-head 3, the defaults; `binding_loss`):
without it the decoder answered "What colour is the <shape>?" with one of the picture's colours,
not the named shape's (60%). Experiments that did not help (models/tiny-dynamic-llava/README.md
says what each did): other --bind-layer/--bind-head values (head 0 of layers 3 and 4, head 3 of
layer 2); kept as options, off by default: --describe first|last (the description turn's place), --colour-weight, --align-weight
(object rows that read as their colour and shape words). The defaults reproduce the committed
weights (on the same kind of CPU).

Evaluation (PyTorch, on the exported fp16 weights): an answer is exact when greedy decoding
produces exactly the answer's tokens followed by "</s>" (checked teacher-forced: every argmax along
the answer equals the next answer token). Modes: dense; Dynamic-LLaVA (top floor(576 * 0.2) = 115
image rows by logit0 - logit1, generated tokens kept as keys iff logit0 > logit1, dropped keys
masked in layers >= 2, as the C++ library runs it); random 115 image rows. Kept-on-object: the
share of kept image rows whose 14x14 patch touches an object, against the share of all patches.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llava_reference import CLIP_MEAN, CLIP_STD, SYSTEM, Tokenizer, tokenize, write_json  # noqa: E402
from tiny_llava_model import IMAGE_ROWS, TinyLlava, check_against_transformers  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BOS, EOS = 1, 2
IMAGE_ID = -200
SIZE, PATCH, GRID = 336, 14, 24
BACKGROUND = (96, 112, 128)  # slate, so that the Figure-6 view's whitened patches show
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30)}
SHAPES = ["circle", "square", "triangle", "cross"]
OBJECT_PATCHES = 2  # an object spans 2 x 2 patches of the grid (see make_scene)
TOWER_NAME = "tiny-clip-vit-patch14-336"

TEXT = dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=352, vocab_size=None, rms_norm_eps=1e-5,
            max_position_embeddings=1024, hidden_act="silu", bos_token_id=BOS, eos_token_id=EOS)
VISION = dict(image_size=SIZE, patch_size=PATCH, num_channels=3, hidden_size=128,
              num_hidden_layers=3, num_attention_heads=4, intermediate_size=512,
              hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=128)
SPARSE = dict(use_vision_predictor=True, vision_keep_rate=0.2, use_text_predictor=True,
              use_output_text_predictor=True, output_text_keep_rate=0.5,
              output_text_len_for_training=12, use_instruct_predictor=False,
              instruct_keep_rate=0.7, instruct_len_for_training=25, sparse_layer=2, d_model=64,
              nhead=4, dim_feedforward=256, num_layers=2, mask_loss_weight=100.0)


# ------------------------------------------------------------------------------------------
# Pictures and questions


def make_scene(rng):
    """Random scene: list of objects {shape, colour, box [x0, y0, x1, y1]} (pixels, inclusive
    start, exclusive end), 1..3 objects of distinct shapes. Each object fills a block of
    OBJECT_PATCHES x OBJECT_PATCHES patches of the 14 px grid (less a 0..2 px margin), blocks at
    least one patch apart: every object patch holds a corner of its object's outline, which a
    tower trained for minutes can tell apart (interior patches of larger objects look alike for
    every shape)."""
    n = rng.randint(1, 3)
    shapes = rng.sample(SHAPES, n)
    objs = []
    k = OBJECT_PATCHES
    for shape in shapes:
        for _ in range(1000):
            gx, gy = rng.randint(0, GRID - k), rng.randint(0, GRID - k)
            cell = [gx, gy, gx + k, gy + k]
            if all(cell[0] >= o["cell"][2] + 1 or o["cell"][0] >= cell[2] + 1 or
                   cell[1] >= o["cell"][3] + 1 or o["cell"][1] >= cell[3] + 1 for o in objs):
                break
        else:
            raise RuntimeError("could not place the objects")
        m = rng.randint(0, 2)
        box = [gx * PATCH + m, gy * PATCH + m, (gx + k) * PATCH - m, (gy + k) * PATCH - m]
        objs.append({"shape": shape, "colour": rng.choice(list(COLOURS)), "box": box,
                     "cell": cell})
    return objs


def draw_shape(d, shape, box, fill):
    x0, y0, x1, y1 = box
    w = x1 - x0
    if shape == "circle":
        d.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        d.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "triangle":
        d.polygon([(x0 + w // 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    elif shape == "cross":
        t = w // 3
        d.rectangle((x0 + t, y0, x1 - 1 - t, y1 - 1), fill=fill)
        d.rectangle((x0, y0 + t, x1 - 1, y1 - 1 - t), fill=fill)
    else:
        raise ValueError(shape)


def render(objs, labels=False):
    """-> (PIL RGB 336x336, bool [24, 24] patches touching an object); with `labels`, also
    int64 [576] colour classes and [576] shape classes of the patches (0 background, else 1 +
    index into COLOURS / SHAPES of the object the patch touches)."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    mask = Image.new("L", (SIZE, SIZE), 0)
    d, dm = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for i, o in enumerate(objs):
        draw_shape(d, o["shape"], o["box"], COLOURS[o["colour"]])
        draw_shape(dm, o["shape"], o["box"], i + 1)
    which = np.asarray(mask).reshape(GRID, PATCH, GRID, PATCH).max(axis=(1, 3))
    m = which > 0
    if not labels:
        return img, m
    col = np.zeros(GRID * GRID, np.int64)
    shp = np.zeros(GRID * GRID, np.int64)
    flat = which.reshape(-1)
    for i, o in enumerate(objs):
        col[flat == i + 1] = 1 + list(COLOURS).index(o["colour"])
        shp[flat == i + 1] = 1 + SHAPES.index(o["shape"])
    return img, m, torch.from_numpy(col), torch.from_numpy(shp)


def pixel_values(img):
    """CLIP normalisation of a 336x336 picture (no padding or resize needed): [3, 336, 336]."""
    a = np.asarray(img, dtype=np.uint8).astype(np.float64) * (1.0 / 255.0)
    a = a.astype(np.float32)
    a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def describe(objs):
    parts = [f"a {o['colour']} {o['shape']}" for o in sorted(objs, key=lambda o: o["box"][0])]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def questions(objs, rng, train):
    """Question kinds answerable for the scene, each as (kind, question, answer). Training:
    every question about the scene (a "yes" or "no" for each shape, the colour of each shape,
    ...); held-out: one of each kind, "yes" and "no" equally often."""
    present = {o["shape"]: o for o in objs}
    qs = [("count", "How many shapes are there?", str(len(objs)))]
    absent = [s for s in SHAPES if s not in present]
    if train:
        qs += [("exists", f"Is there a {s}?", "yes" if s in present else "no") for s in SHAPES]
        qs += [("colour", f"What colour is the {o['shape']}?", o["colour"]) for o in objs]
    else:
        if absent and rng.random() < 0.5:
            qs.append(("exists", f"Is there a {rng.choice(absent)}?", "no"))
        else:
            qs.append(("exists", f"Is there a {rng.choice(list(present))}?", "yes"))
        o = rng.choice(objs)
        qs.append(("colour", f"What colour is the {o['shape']}?", o["colour"]))
    if len(objs) == 1:
        qs.append(("shape", "What shape is shown?", objs[0]["shape"]))
    if train:
        qs.append(("describe", "Describe the image.", describe(objs)))
    return qs


def corpus_lines():
    """Every text the model sees, for the tokenizer."""
    lines = [SYSTEM, "USER: <image>", "ASSISTANT:", "How many shapes are there? 1 2 3",
             "What shape is shown?", "Describe the image."]
    for s in SHAPES:
        lines += [f"Is there a {s}? yes no", f"What colour is the {s}?", s]
        for c in COLOURS:
            lines.append(f"a {c} {s}, a {c} {s} and a {c} {s}")
    return lines


def train_tokenizer(path):
    """Writes the SentencePiece model to `path` (its bytes do not depend on `path`)."""
    lines = corpus_lines() * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=path[:-len(".model")], model_type="bpe",
        vocab_size=1000, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, character_coverage=1.0, hard_vocab_limit=False, num_threads=1,
        minloglevel=2)
    os.remove(path[:-len(".model")] + ".vocab")
    clear_model_prefix(path)


def clear_model_prefix(path):
    """SentencePiece records the output path in the model (trainer_spec.model_prefix); clear it."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    proto = sp_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    proto.trainer_spec.model_prefix = ""
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


# ------------------------------------------------------------------------------------------
# Token sequences


class Encoder:
    def __init__(self, tok_path):
        self.tok = Tokenizer(tok_path)
        self.cache = {}

    def ids(self, text):
        if text not in self.cache:
            self.cache[text] = tokenize(self.tok, text, IMAGE_ID)
        return self.cache[text]

    def conversation(self, turns):
        """turns [(question, answer)] -> (ids with one IMAGE_ID, label mask, answer starts): the
        vicuna_v1 prompt with the picture in the first turn; labels on each answer and its
        "</s>"; answer starts: the index in ids of each turn's first answer token."""
        text = SYSTEM + " "
        ids, labels, starts = None, None, []
        for i, (q, a) in enumerate(turns):
            prompt = text + "USER: " + ("<image>\n" if i == 0 else "") + q + " ASSISTANT:"
            full = prompt + " " + a + "</s>"
            p, f = self.ids(prompt), self.ids(full)
            assert f[:len(p)] == p and f[-1] == EOS, (prompt, full)
            assert ids is None or p[:len(ids)] == ids, "turns do not tokenise as a prefix"
            labels = (labels or []) + [False] * (len(p) - len(labels or [])) + [True] * (len(f) - len(p))
            ids = f
            text = full
            starts.append(len(p))
        return ids, labels, starts


def expand(ids):
    """IMAGE_ID -> 576 placeholder rows (id 0); returns (ids, image_start)."""
    s = ids.index(IMAGE_ID)
    return ids[:s] + [0] * IMAGE_ROWS + ids[s + 1:], s


def batch_of(seqs):
    """seqs [(ids, labels, image_start, pixels, ...)] -> right-padded tensors."""
    t = max(len(s[0]) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    lab = torch.zeros(len(seqs), t, dtype=torch.bool)
    for b, (i, l) in enumerate(s[:2] for s in seqs):
        ids[b, :len(i)] = torch.tensor(i)
        lab[b, :len(l)] = torch.tensor(l)
    starts = torch.tensor([s[2] for s in seqs])
    px = torch.stack([s[3] for s in seqs])
    return ids, lab, starts, px


def train_example(enc, seed, index, describe="random"):
    rng = random.Random(f"train-{seed}-{index}")
    objs = make_scene(rng)
    img, _, col, shp = render(objs, labels=True)
    qs = questions(objs, rng, train=True)
    # Every question about the picture, in random order: the text rows are cheap next to the
    # 576 image rows, so each picture carries as much supervision as it can. With describe=
    # "last", "Describe the image." comes last, so that no later answer can copy a
    # colour from the description's text (held-out questions come alone).
    if describe == "random":
        order = rng.sample(qs, len(qs))
    else:
        asks = [x for x in qs if x[0] != "describe"]
        d = [x for x in qs if x[0] == "describe"]
        asks = rng.sample(asks, len(asks))
        order = asks + d if describe == "last" else d + asks
    ids, labels, answers = enc.conversation([(q, a) for _, q, a in order])
    ids, start = expand(ids)
    labels = labels[:start] + [False] * IMAGE_ROWS + labels[start + 1:]
    # The rows that predict a colour answer, with the shape class the question names (for the
    # binding loss); answers come after the picture, so they move by the 575 added rows.
    named = {o["shape"] for o in objs}
    binds = [(answers[i] - 1 + IMAGE_ROWS - 1, 1 + SHAPES.index(q.split()[-1][:-1]))
             for i, (kind, q, _) in enumerate(order) if kind == "colour"]
    assert all(SHAPES[c - 1] in named for _, c in binds)
    # The answer tokens of colour questions (for --colour-weight), in expanded rows.
    colour = [False] * len(ids)
    for i, (kind, _, _) in enumerate(order):
        j = answers[i] + IMAGE_ROWS - 1
        while kind == "colour" and j < len(ids) and labels[j]:
            colour[j] = True
            j += 1
    return ids, labels, start, pixel_values(img), col, shp, binds, colour


# ------------------------------------------------------------------------------------------
# Held-out set


def heldout(enc, seed, images):
    """Held-out questions: 3 per picture (count, exists, and colour or, for one object, shape)."""
    items = []
    for n in range(images):
        rng = random.Random(f"heldout-{seed}-{n}")
        objs = make_scene(rng)
        img, mask = render(objs)
        qs = {k: (q, a) for k, q, a in questions(objs, rng, train=False)}
        kinds = ["count", "exists", "shape" if "shape" in qs and n % 2 == 0 else "colour"]
        for kind in kinds:
            q, a = qs[kind]
            prompt = SYSTEM + " USER: <image>\n" + q + " ASSISTANT:"
            p, f = enc.ids(prompt), enc.ids(prompt + " " + a + "</s>")
            assert f[:len(p)] == p
            items.append(dict(image_index=n, objects=objs, kind=kind, question=q, answer=a,
                              prompt_ids=p, answer_ids=f[len(p):], img=img, mask=mask))
    return items


def write_heldout(items, folder, seed):
    """<folder>/eval/heldout.jsonl and <folder>/eval/images/heldout-NNNN.png."""
    d = os.path.join(folder, "eval")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "images"))
    with open(os.path.join(d, "heldout.jsonl"), "w") as f:
        for i, it in enumerate(items):
            name = f"images/heldout-{it['image_index']:04d}.png"
            path = os.path.join(d, name)
            if not os.path.exists(path):
                it["img"].save(path, optimize=True)
            rec = {"id": i, "image": name, "question": it["question"], "answer": it["answer"],
                   "kind": it["kind"], "prompt_ids": it["prompt_ids"],
                   "answer_ids": it["answer_ids"],
                   "objects": [{"shape": o["shape"], "colour": o["colour"],
                                "box": o["box"]} for o in it["objects"]],
                   "object_patches": ["".join("1" if v else "0" for v in row)
                                      for row in it["mask"]],
                   "seed": seed}
            f.write(json.dumps(rec) + "\n")


# ------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model, items, mode, chunk=16, rng_seed=0):
    """Exact-answer rate, kept-on-object share and the objects' patch share over `items`.
    mode: "dense", "dynamic" (predictors) or "random" (115 random image rows)."""
    model.eval()
    exact, kept, on_obj, obj_patches = 0, 0, 0, 0
    gen = torch.Generator().manual_seed(rng_seed)
    per_kind = {}
    answers = []
    for c0 in range(0, len(items), chunk):
        part = items[c0:c0 + chunk]
        seqs = []
        for it in part:
            ids, start = expand(it["prompt_ids"] + it["answer_ids"])
            seqs.append((ids, [False] * len(ids), start, pixel_values(it["img"])))
        ids, _, starts, px = batch_of(seqs)
        gate = torch.zeros_like(ids, dtype=torch.bool)
        for b, it in enumerate(part):
            p = len(it["prompt_ids"]) + IMAGE_ROWS - 1
            gate[b, p:p + len(it["answer_ids"])] = True
        keep = None
        if mode == "random":
            k = int(IMAGE_ROWS * SPARSE["vision_keep_rate"])
            keep = torch.zeros(len(part), IMAGE_ROWS, dtype=torch.bool)
            for b in range(len(part)):
                keep[b, torch.randperm(IMAGE_ROWS, generator=gen)[:k]] = True
        if mode == "dense":
            logits, info = model(ids, starts, px, mode="dense")
        else:
            logits, info = model(ids, starts, px, mode="infer", keep_image=keep,
                                 gate_outputs=gate if mode == "dynamic" else None)
        pred = logits.argmax(-1)
        for b, it in enumerate(part):
            p = len(it["prompt_ids"]) + IMAGE_ROWS - 1
            a = it["answer_ids"]
            got = pred[b, p - 1:p - 1 + len(a)].tolist()
            ok = got == a
            exact += ok
            pk = per_kind.setdefault(it["kind"], [0, 0])
            pk[0] += ok
            pk[1] += 1
            answers.append(got[0])
            m = torch.from_numpy(it["mask"].reshape(-1))
            obj_patches += int(m.sum())
            if mode != "dense":
                kb = info["image_keep"][b]
                kept += int(kb.sum())
                on_obj += int((kb & m).sum())
    n = len(items)
    return {"exact": exact / n, "n": n, "per_kind": {k: v[0] / v[1] for k, v in per_kind.items()},
            "kept_on_object": on_obj / kept if kept else None,
            "object_patch_share": obj_patches / (n * IMAGE_ROWS), "first_tokens": answers}


@torch.no_grad()
def greedy(model, item, mode, max_new=8):
    """Greedy decoding with full recompute (no KV cache), stopping after EOS: the tokens. mode
    "dense" or "dynamic" (as `evaluate`; generated tokens but the last are gated)."""
    model.eval()
    ids, start = expand(item["prompt_ids"])
    px = pixel_values(item["img"])[None]
    out, kept = [], None
    for _ in range(max_new):
        x = torch.tensor([ids + out])
        if mode == "dense":
            logits, _ = model(x, torch.tensor([start]), px, mode="dense")
        else:
            gate = torch.zeros_like(x, dtype=torch.bool)
            gate[0, len(ids):len(ids) + len(out)] = True
            logits, info = model(x, torch.tensor([start]), px, mode="infer", gate_outputs=gate)
            kept = torch.nonzero(info["image_keep"][0]).flatten().tolist()
        out.append(int(logits[0, -1].argmax()))
        if out[-1] == EOS:
            break
    return out, kept


def write_greedy_reference(model, items, enc, folder, n=12):
    """<folder>/eval/greedy_reference.json: PyTorch's greedy tokens (fp16 weights, fp32 compute)
    for the first `n` held-out questions, dense and Dynamic-LLaVA, for the C++ side to match."""
    rows = []
    for i, it in enumerate(items[:n]):
        d, _ = greedy(model, it, "dense")
        y, kept = greedy(model, it, "dynamic")
        rows.append({"id": i, "question": it["question"], "answer": it["answer"], "dense": d,
                     "dynamic": y, "dense_text": enc.tok.sp.decode(d),
                     "dynamic_text": enc.tok.sp.decode(y), "dynamic_kept_image_rows": kept})
    write_json(os.path.join(folder, "eval", "greedy_reference.json"),
               {"about": "greedy tokens of tools/train_tiny_llava.py's PyTorch model (the fp16 "
                         "weights of model.safetensors, fp32 compute, no KV cache; Dynamic-LLaVA: "
                         "top-115 image rows, generated tokens gated by logit0 > logit1); the "
                         "first ids of eval/heldout.jsonl; EOS (2) included; "
                         "dynamic_kept_image_rows: the kept image rows, 0..575 in raster order",
                "questions": rows})
    return rows


def load_exported(folder):
    """The exported folder's model (fp16 weights widened to fp32)."""
    from safetensors.torch import load_file
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(folder, TOWER_NAME, "config.json")) as f:
        vis = {k: v for k, v in json.load(f).items() if k in VISION}
    text = {k: cfg[k] for k in TEXT}
    model = TinyLlava(text, vis, cfg["sparse_config"])
    sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model


# ------------------------------------------------------------------------------------------
# Training


def lr_at(step, steps, base, warmup=50):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * p)))


def patch_loss(colour_logits, shape_logits, col, shp):
    """The per-patch auxiliary loss: colour class (background included) over every patch, shape
    class over the object patches only (averaged over them, so that the few object patches are
    not drowned by the background ones)."""
    obj = shp > 0
    return (F.cross_entropy(colour_logits.flatten(0, 1), col.flatten())
            + F.cross_entropy(shape_logits[obj], shp[obj]))


def binding_loss(q, k, starts, shp, binds, head):
    """Training-only guidance for "What colour is the <shape>?": at the row that predicts the
    answer, attention head `head` of one decoder layer (q, k [B, heads, T, hd] after RoPE) should
    look at the patches of the named shape. The loss is -log of the causal attention mass that
    the head puts on those patches, averaged over the colour questions of the batch. It only
    guides training (like the per-patch and predictor terms); the exported model is a plain
    Dynamic-LLaVA. binds[b]: [(row, shape class)]; shp [B, 576] the patches' shape classes."""
    terms = []
    hd = q.shape[-1]
    for b, rows in enumerate(binds):
        s = int(starts[b])
        for r, cls in rows:
            a = torch.softmax((k[b, head, :r + 1] @ q[b, head, r]).float() / math.sqrt(hd), -1)
            mass = a[s:s + IMAGE_ROWS][shp[b] == cls].sum()
            terms.append(-torch.log(mass + 1e-6))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def run_tower_phase(model, aux, args, steps, log):
    """Pre-trains the vision tower alone on the per-patch colour and shape classes (the `aux`
    heads, never exported) of pictures from the training stream: a picture costs a quarter of a
    training sequence, and the decoder then starts from rows that already tell the objects
    apart. Returns seconds spent."""
    tower = model.model.vision_tower.vision_tower.vision_model
    params = list(tower.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr_tower, betas=(0.9, 0.98), weight_decay=0.0)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, args.lr_tower)
        px, col, shp = [], [], []
        for b in range(args.tower_batch):
            rng = random.Random(f"tower-{args.seed}-{step * args.tower_batch + b}")
            img, _, c, s = render(make_scene(rng), labels=True)
            px.append(pixel_values(img))
            col.append(c)
            shp.append(s)
        px, col, shp = torch.stack(px), torch.stack(col), torch.stack(shp)
        tower.train()
        rows = tower(px, -2)
        lc, ls = aux["colour"](rows), aux["shape"](rows)
        loss = patch_loss(lc, ls, col, shp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            obj = col > 0
            acc_c = (lc.argmax(-1) == col)[obj].float().mean().item()
            acc_s = (ls.argmax(-1) == shp)[obj].float().mean().item()
            log(f"tower step {step}/{steps} aux {loss.item():.4f} object patches: colour "
                f"{acc_c:.3f} shape {acc_s:.3f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{time.time() - t0:.0f}s")
    return time.time() - t0


def run_phase(model, aux, enc, args, phase, steps, eval_items, log, offset):
    """Trains `steps` steps of `phase` ("dense" or "dynamic"); returns seconds spent. `aux`:
    the training-only per-patch heads (colour and shape class of each patch from the tower's
    rows, never exported), weighted by args.aux_weight: they teach the tower to see the objects
    long before the answers alone would."""
    pred_params = [p for n, p in model.named_parameters() if "score_predictor" in n]
    other = [p for n, p in model.named_parameters() if "score_predictor" not in n]
    if phase == "dense":
        for p in pred_params:
            p.requires_grad_(False)
        groups = [{"params": other + list(aux.parameters()), "base": args.lr}]
    else:
        for p in pred_params:
            p.requires_grad_(True)
        groups = [{"params": other + list(aux.parameters()), "base": args.lr_dynamic},
                  {"params": pred_params, "base": args.lr_predictor}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + (1 if phase == "dynamic" else 0))
    t0 = time.time()
    min_out = SPARSE["output_text_len_for_training"]
    colour_words = torch.tensor([enc.ids(" ASSISTANT: " + c)[-1] for c in COLOURS])
    shape_words = torch.tensor([enc.ids("Is there a " + s)[-1] for s in SHAPES])
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, g["base"])
        seqs = [train_example(enc, args.seed, offset + step * args.batch + b, args.describe)
                for b in range(args.batch)]
        ids, lab, starts, px = batch_of(seqs)
        col = torch.stack([s[4] for s in seqs])
        shp = torch.stack([s[5] for s in seqs])
        bind_attn = model.model.layers[args.bind_layer].self_attn if args.bind_weight > 0 else None
        if bind_attn is not None:
            bind_attn.keep_qk = True
        model.train()
        if phase == "dense":
            logits, info = model(ids, starts, px, mode="dense")
            budget = torch.zeros(())
        else:
            tau = 0.1 ** (step / steps)
            long_ans = lab.sum(1) >= min_out
            out_mask = lab & long_ans[:, None]
            logits, info = model(ids, starts, px, mode="train", tau=tau, out_mask=out_mask,
                                 generator=gen)
            img_rate = info["image_keep"].mean(1)
            budget = ((SPARSE["vision_keep_rate"] - img_rate) ** 2).mean()
            if "out_keep" in info:
                ok = info["out_keep"]
                rate = (ok * out_mask).sum(1) / out_mask.sum(1).clamp(min=1)
                term = torch.where(long_ans, (SPARSE["output_text_keep_rate"] - rate) ** 2,
                                   torch.zeros(()))
                budget = budget + term.mean()
            budget = SPARSE["mask_loss_weight"] * budget
        # next-token loss on the answer tokens (colour answers weighted by --colour-weight)
        tgt = lab[:, 1:]
        if args.colour_weight == 1.0:
            ce = F.cross_entropy(logits[:, :-1][tgt], ids[:, 1:][tgt])
        else:
            wt = torch.ones(lab.shape)
            for b, sq in enumerate(seqs):
                wt[b, :len(sq[7])] += (args.colour_weight - 1.0) * torch.tensor(sq[7], dtype=torch.float32)
            w = wt[:, 1:][tgt]
            ce = (F.cross_entropy(logits[:, :-1][tgt], ids[:, 1:][tgt], reduction="none") * w).sum() / w.sum()
        rows = model.last_tower_rows
        aux_loss = patch_loss(aux["colour"](rows), aux["shape"](rows), col, shp)
        loss = ce + budget + args.aux_weight * aux_loss
        if args.align_weight > 0:
            # Training-only: each object patch's projected row, read through the word
            # embeddings, names its colour and its shape (two cross-entropies), so that what the
            # decoder learns about words in text applies to the picture's rows.
            emb = model.model.embed_tokens.weight
            obj = shp > 0
            wl = model.last_image_rows[obj] @ emb.t()
            loss = loss + args.align_weight * (F.cross_entropy(wl, colour_words[col[obj] - 1]) +
                                               F.cross_entropy(wl, shape_words[shp[obj] - 1]))
        bind = torch.zeros(())
        if bind_attn is not None:
            bind_attn.keep_qk = False
            bind = binding_loss(bind_attn.last_q, bind_attn.last_k, starts, shp,
                                [s[6] for s in seqs], args.bind_head)
            loss = loss + args.bind_weight * bind
        if phase == "dynamic" and args.predictor_aux_weight > 0:
            # Training-only guidance for the short run: the image predictor's keep margin
            # against the patches that touch an object.
            lg = info["image_logits"]
            pred_aux = F.binary_cross_entropy_with_logits(
                (lg[..., 0] - lg[..., 1]).float(), (col > 0).float())
            loss = loss + args.predictor_aux_weight * pred_aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            extra = ""
            if phase == "dynamic":
                extra = f" budget {budget.item():.4f} img_keep {info['image_keep'].mean().item():.3f}"
                if "out_keep" in info:
                    extra += f" out_keep {(info['out_keep'] * out_mask).sum().item() / max(1, out_mask.sum().item()):.3f}"
            log(f"{phase} step {step}/{steps} ce {ce.item():.4f} aux {aux_loss.item():.4f} "
                f"bind {bind.item():.4f}{extra} "
                f"lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s")
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < steps:
            mode = "dense" if phase == "dense" else "dynamic"
            r = evaluate(model, eval_items, mode)
            log(f"  eval {mode} on {r['n']}: exact {r['exact']:.3f} {r['per_kind']}"
                + (f" kept-on-object {r['kept_on_object']:.3f} vs {r['object_patch_share']:.3f}"
                   if r["kept_on_object"] is not None else ""))
    return time.time() - t0


# ------------------------------------------------------------------------------------------
# Export


def round_to_fp16(model):
    with torch.no_grad():
        for p in model.state_dict().values():
            p.copy_(p.to(torch.float16).to(p.dtype))


def export(model, out, tok_path, vocab):
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tok_path, os.path.join(out, "tokenizer.model"))
    t = dict(TEXT, vocab_size=vocab)
    cfg = {
        "architectures": ["DynamicLlavaLlamaForCausalLM"],
        "model_type": "dynamic_llava_llama",
        "hidden_size": t["hidden_size"], "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_attention_heads": t["num_attention_heads"],
        "num_key_value_heads": t["num_key_value_heads"], "hidden_act": "silu",
        "max_position_embeddings": t["max_position_embeddings"], "rms_norm_eps": t["rms_norm_eps"],
        "rope_theta": 10000.0, "rope_scaling": None, "vocab_size": vocab, "bos_token_id": BOS,
        "eos_token_id": EOS, "pad_token_id": 0, "tie_word_embeddings": False,
        "torch_dtype": "float16", "use_cache": True, "image_aspect_ratio": "pad",
        "mm_hidden_size": VISION["hidden_size"], "mm_patch_merge_type": "flat",
        "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False, "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2, "mm_vision_tower": TOWER_NAME, "use_mm_proj": True,
        "tokenizer_model_max_length": t["max_position_embeddings"],
        "sparse_config": SPARSE,
    }
    write_json(os.path.join(out, "config.json"), cfg)
    os.makedirs(os.path.join(out, TOWER_NAME), exist_ok=True)
    c = {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
         "torch_dtype": "float16", "attention_dropout": 0.0, "initializer_factor": 1.0,
         "initializer_range": 0.02}
    c.update(VISION)
    write_json(os.path.join(out, TOWER_NAME, "config.json"), c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "tiny-dynamic-llava"))
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--dense-steps", type=int, default=1000)
    ap.add_argument("--dynamic-steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--lr-dynamic", type=float, default=3e-4)
    ap.add_argument("--lr-predictor", type=float, default=2e-3)
    ap.add_argument("--aux-weight", type=float, default=1.0,
                    help="weight of the per-patch colour/shape loss on the tower rows")
    ap.add_argument("--tower-layers", type=int, default=VISION["num_hidden_layers"],
                    help="CLIP layers (layer -2 is read, so one fewer runs)")
    ap.add_argument("--tower-steps", type=int, default=250)
    ap.add_argument("--tower-batch", type=int, default=12)
    ap.add_argument("--lr-tower", type=float, default=2e-3)
    ap.add_argument("--predictor-aux-weight", type=float, default=1.0,
                    help="weight of the image predictor's object-patch loss (dynamic phase)")
    ap.add_argument("--bind-weight", type=float, default=0.3,
                    help="weight of the training-only binding loss (see binding_loss); 0: off")
    ap.add_argument("--bind-layer", type=int, default=3)
    ap.add_argument("--describe", choices=["random", "first", "last"], default="random",
                    help="where the description turn goes in a training conversation")
    ap.add_argument("--align-weight", type=float, default=0.0,
                    help="weight of the training-only word-alignment loss (see run_phase)")
    ap.add_argument("--colour-weight", type=float, default=1.0,
                    help="weight of the colour answers' tokens in the language-model loss")
    ap.add_argument("--bind-head", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heldout-images", type=int, default=134)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-subset", type=int, default=48)
    ap.add_argument("--from-dense", help="skip the dense phase: load this state (.pt)")
    ap.add_argument("--reference-only", action="store_true",
                    help="load the exported <out> and only write eval/greedy_reference.json")
    ap.add_argument("--eval-random", action="store_true",
                    help="also evaluate 115 random image rows in PyTorch (the C++ tool does)")
    ap.add_argument("--samples", type=int, default=4, help="sample pictures written to <out>")
    args = ap.parse_args()

    VISION["num_hidden_layers"] = args.tower_layers
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed % 2**32)
    os.makedirs(args.out, exist_ok=True)
    if args.reference_only:
        enc = Encoder(os.path.join(args.out, "tokenizer.model"))
        model = load_exported(args.out)
        for r in write_greedy_reference(model, heldout(enc, args.seed, args.heldout_images), enc,
                                        args.out):
            print(r)
        return
    log_file = open(os.path.join(args.out, "train_log.txt"), "w")
    t_start = time.time()

    def log(msg):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"args {vars(args)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    tok_path = os.path.join(args.out, "tokenizer.model")
    tmp_tok = os.path.join(args.out, ".train-tokenizer.model")
    train_tokenizer(tmp_tok)
    enc = Encoder(tmp_tok)
    vocab = enc.tok.sp.get_piece_size()
    assert enc.tok.sp.bos_id() == BOS and enc.tok.sp.eos_id() == EOS
    log(f"tokenizer: {vocab} pieces; system prompt {len(enc.ids(SYSTEM)) - 1} tokens")

    items = heldout(enc, args.seed, args.heldout_images)
    write_heldout(items, args.out, args.seed)
    eval_sub = items[:args.eval_subset]
    log(f"held-out: {len(items)} questions on {args.heldout_images} pictures; object patch share "
        f"{np.mean([it['mask'].mean() for it in items]):.3f}")
    sd = os.path.join(args.out, "samples")
    if os.path.exists(sd):
        shutil.rmtree(sd)
    os.makedirs(sd)
    for n in range(args.samples):
        objs = make_scene(random.Random(f"sample-{args.seed}-{n}"))
        render(objs)[0].save(os.path.join(sd, f"sample-{n}.png"), optimize=True)
        log(f"sample-{n}.png: {describe(objs)}")

    text = dict(TEXT, vocab_size=vocab)
    model = TinyLlava(text, VISION, SPARSE)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters")

    # The tower and the decoder are checked against transformers on the initial weights.
    ex = train_example(enc, args.seed, 0)
    d_clip, d_llm = check_against_transformers(model, ex[3][None],
                                               torch.tensor([enc.ids(SYSTEM)]))
    log(f"check vs transformers: CLIP layer -2 max diff {d_clip:.2e}, LLaMA logits {d_llm:.2e}")
    assert d_clip < 1e-4 and d_llm < 1e-4

    c = VISION["hidden_size"]
    aux = torch.nn.ModuleDict({"colour": torch.nn.Linear(c, 1 + len(COLOURS)),
                               "shape": torch.nn.Linear(c, 1 + len(SHAPES))})
    t_tower = 0.0
    if args.from_dense:
        model.load_state_dict(torch.load(args.from_dense))
        t_dense = 0.0
        log(f"dense phase skipped: loaded {args.from_dense}")
    else:
        t_tower = run_tower_phase(model, aux, args, args.tower_steps, log)
        log(f"tower phase: {args.tower_steps} steps x {args.tower_batch} pictures in "
            f"{t_tower:.0f}s")
        torch.save(model.state_dict(), os.path.join(args.out, ".tower-state.pt"))
        t_dense = run_phase(model, aux, enc, args, "dense", args.dense_steps, eval_sub, log, 0)
        torch.save(model.state_dict(), os.path.join(args.out, ".dense-state.pt"))
    log(f"dense phase: {args.dense_steps} steps x {args.batch} in {t_dense:.0f}s")
    t_dyn = run_phase(model, aux, enc, args, "dynamic", args.dynamic_steps, eval_sub, log,
                      10**8)
    log(f"dynamic phase: {args.dynamic_steps} steps x {args.batch} in {t_dyn:.0f}s")

    round_to_fp16(model)
    export(model, args.out, tmp_tok, vocab)
    os.remove(tmp_tok)
    res = {}
    for mode in ("dense", "dynamic") + (("random",) if args.eval_random else ()):
        r = evaluate(model, items, mode)
        res[mode] = {k: v for k, v in r.items() if k != "first_tokens"}
        log(f"final {mode}: exact {r['exact']:.4f} on {r['n']} {r['per_kind']}"
            + (f"; kept-on-object {r['kept_on_object']:.4f}, object patch share "
               f"{r['object_patch_share']:.4f}" if r["kept_on_object"] is not None else ""))
    write_greedy_reference(model, items, enc, args.out)
    summary = {
        "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
        "train_sequences": (args.dense_steps + args.dynamic_steps) * args.batch,
        "dense_steps": args.dense_steps, "dynamic_steps": args.dynamic_steps,
        "batch": args.batch, "tower_steps": args.tower_steps, "tower_batch": args.tower_batch,
        "train_seconds": {"tower": round(t_tower), "dense": round(t_dense), "dynamic": round(t_dyn),
                                               "total_script": round(time.time() - t_start)},
        "heldout_questions": len(items), "heldout_images": args.heldout_images,
        "parameters": n_params, "eval_pytorch_fp16_weights": res,
    }
    write_json(os.path.join(args.out, "training_summary.json"), summary)
    log(f"done in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
