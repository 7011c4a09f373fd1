#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent reference for dynllava's predictor tests (numpy, float64; shares no code with the
C++ implementation). Writes tests/fixtures/predictors/:

  model-00001-of-00002.safetensors   image predictor (F32, down_mlp.1.weight in F16) + unrelated
                                     LLM-like tensors, laid out like a Dynamic-LLaVA checkpoint
  model-00002-of-00002.safetensors   output-text predictor (BF16) + lm_head.weight
  model.safetensors.index.json       weight_map of both shards
  inputs.safetensors                 hidden states: image tokens of 3 sequences, output tokens
  expected.json                      config, indptrs, reference logits, the top-k of sequence 0
                                     (floor(576 * 0.2) = 115) and the argmax-gate decisions

Regenerate (Debian: apt-get install python3-numpy):  /usr/bin/python3 tools/predictor_reference.py
The architecture follows METHOD.md section 3 with small sizes (H=48, d_model=32, 4 heads,
ffn 64, local 16, heads 16/8 and 32/16/8); stored F16/BF16 weights are rounded first and the
reference uses the rounded values, exactly what a loader sees.
"""
import json
import math
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "predictors")
CFG = dict(hidden=48, d_model=32, heads=4, ffn=64, blocks=2, local_dim=16, image_head=[16, 8],
           output_head=[32, 16, 8])
IMAGE_LENGTHS = [576, 100, 37]
OUTPUT_TOKENS = 50
EPS = 1e-5
erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + EPS) * g + b


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def round_f16(a):
    return a.astype(np.float16).astype(np.float64)


def round_bf16(a):
    bits = a.astype(np.float32).view(np.uint32)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)  # RNE
    return bits.view(np.float32).astype(np.float64)


def write_safetensors(path, tensors):
    """tensors: list of (name, array float64, dtype str) -> file; returns nothing."""
    header, blobs, off = {}, [], 0
    for name, a, dt in tensors:
        if dt == "F32":
            raw = a.astype("<f4").tobytes()
        elif dt == "F16":
            raw = a.astype("<f2").tobytes()
        elif dt == "BF16":
            raw = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raise ValueError(dt)
        header[name] = dict(dtype=dt, shape=list(a.shape), data_offsets=[off, off + len(raw)])
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


def main():
    rng = np.random.default_rng(20261125)
    H, d, ffn = CFG["hidden"], CFG["d_model"], CFG["ffn"]

    def lin(i, o):
        k = 1.0 / math.sqrt(i)
        return rng.uniform(-k, k, (o, i)), rng.uniform(-k, k, o)

    def ln(n):
        return 1.0 + 0.1 * rng.standard_normal(n), 0.1 * rng.standard_normal(n)

    img, dtypes = {}, {}
    img["down_mlp.0.weight"], img["down_mlp.0.bias"] = ln(H)
    img["down_mlp.1.weight"], img["down_mlp.1.bias"] = lin(H, d)
    img["down_mlp.1.weight"] = round_f16(img["down_mlp.1.weight"])
    dtypes["down_mlp.1.weight"] = "F16"
    for i in range(CFG["blocks"]):
        p = f"transformer.{i}."
        img[p + "norm1.weight"], img[p + "norm1.bias"] = ln(d)
        img[p + "attn.qkv.weight"] = lin(d, 3 * d)[0]
        img[p + "attn.proj.weight"], img[p + "attn.proj.bias"] = lin(d, d)
        img[p + "norm2.weight"], img[p + "norm2.bias"] = ln(d)
        img[p + "mlp.fc1.weight"], img[p + "mlp.fc1.bias"] = lin(d, ffn)
        img[p + "mlp.fc2.weight"], img[p + "mlp.fc2.bias"] = lin(ffn, d)
    h0, h1 = CFG["image_head"]
    img["output_mlp.0.weight"], img["output_mlp.0.bias"] = lin(d, h0)
    img["output_mlp.2.weight"], img["output_mlp.2.bias"] = lin(h0, h1)
    img["output_mlp.4.weight"], img["output_mlp.4.bias"] = lin(h1, 2)
    for k in img:  # everything else is stored as F32
        if k not in dtypes:
            img[k] = img[k].astype(np.float32).astype(np.float64)

    out = {}
    out["output_mlp.0.weight"], out["output_mlp.0.bias"] = ln(H)
    dims = [H] + CFG["output_head"] + [2]
    for j in range(4):
        out[f"output_mlp.{2 * j + 1}.weight"], out[f"output_mlp.{2 * j + 1}.bias"] = lin(dims[j], dims[j + 1])
    out = {k: round_bf16(v) for k, v in out.items()}

    def image_logits(x):
        h = gelu(linear(layer_norm(x, img["down_mlp.0.weight"], img["down_mlp.0.bias"]),
                        img["down_mlp.1.weight"], img["down_mlp.1.bias"]))
        n, heads = x.shape[0], CFG["heads"]
        hd = d // heads
        for i in range(CFG["blocks"]):
            p = f"transformer.{i}."
            a = layer_norm(h, img[p + "norm1.weight"], img[p + "norm1.bias"])
            qkv = linear(a, img[p + "attn.qkv.weight"]).reshape(n, 3, heads, hd)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [n, heads, hd]
            s = np.einsum("ihc,jhc->hij", q, k) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hij,jhc->ihc", s, v).reshape(n, d)
            h = h + linear(o, img[p + "attn.proj.weight"], img[p + "attn.proj.bias"])
            m = layer_norm(h, img[p + "norm2.weight"], img[p + "norm2.bias"])
            h = h + linear(gelu(linear(m, img[p + "mlp.fc1.weight"], img[p + "mlp.fc1.bias"])),
                           img[p + "mlp.fc2.weight"], img[p + "mlp.fc2.bias"])
        loc = CFG["local_dim"]
        z = np.concatenate([h[:, :loc], np.repeat(h[:, loc:].mean(0, keepdims=True), n, 0)], 1)
        z = gelu(linear(z, img["output_mlp.0.weight"], img["output_mlp.0.bias"]))
        z = gelu(linear(z, img["output_mlp.2.weight"], img["output_mlp.2.bias"]))
        return linear(z, img["output_mlp.4.weight"], img["output_mlp.4.bias"])

    def output_logits(x):
        t = layer_norm(x, out["output_mlp.0.weight"], out["output_mlp.0.bias"])
        for j in range(3):
            t = gelu(linear(t, out[f"output_mlp.{2 * j + 1}.weight"], out[f"output_mlp.{2 * j + 1}.bias"]))
        return linear(t, out["output_mlp.7.weight"], out["output_mlp.7.bias"])

    # Hidden states: a per-sequence offset so that the global (mean) half matters.
    xs = [(rng.standard_normal((n, H)) + rng.standard_normal(H)).astype(np.float32).astype(np.float64)
          for n in IMAGE_LENGTHS]
    xo = (2.0 * rng.standard_normal((OUTPUT_TOKENS, H))).astype(np.float32).astype(np.float64)
    li = [image_logits(x) for x in xs]
    lo = output_logits(xo)
    # Centre the keep/drop margin so that the gate keeps about half of the tokens.
    out["output_mlp.7.bias"] = round_bf16(out["output_mlp.7.bias"] - np.array([np.median(lo[:, 0] - lo[:, 1]), 0.0]))
    lo = output_logits(xo)

    s0 = li[0][:, 0] - li[0][:, 1]
    k = int(576 * 0.2)
    order = sorted(range(576), key=lambda i: (-s0[i], i))
    gap = s0[order[k - 1]] - s0[order[k]]
    assert gap > 1e-4, f"top-k boundary too close ({gap}); change the seed"
    top = sorted(order[:k])

    os.makedirs(OUT, exist_ok=True)
    pi = "model.image_score_predictor."
    po = "model.output_text_score_predictor."
    shard1 = [(pi + n, v, dtypes.get(n, "F32")) for n, v in sorted(img.items())]
    shard1 += [("model.embed_tokens.weight", rng.standard_normal((16, 8)), "F32"),
               ("model.layers.0.self_attn.q_proj.weight", rng.standard_normal((8, 8)), "F32")]
    shard2 = [(po + n, v, "BF16") for n, v in sorted(out.items())]
    shard2 += [("lm_head.weight", rng.standard_normal((16, 8)), "F32")]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    write_safetensors(os.path.join(OUT, names[0]), shard1)
    write_safetensors(os.path.join(OUT, names[1]), shard2)
    index = {"metadata": {"total_size": 0},
             "weight_map": {**{n: names[0] for n, _, _ in shard1}, **{n: names[1] for n, _, _ in shard2}}}
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
    write_safetensors(os.path.join(OUT, "inputs.safetensors"),
                      [("image_hidden", np.concatenate(xs), "F32"), ("output_hidden", xo, "F32")])
    expected = dict(config=CFG,
                    image_indptr=[0] + list(np.cumsum(IMAGE_LENGTHS).tolist()),
                    image_logits=np.concatenate(li).reshape(-1).tolist(),
                    output_logits=lo.reshape(-1).tolist(),
                    top115_sequence0=top, top115_boundary_gap=gap,
                    output_keep=[int(a > b) for a, b in lo])
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"wrote {OUT}: gap at the top-115 boundary {gap:.3g}, "
          f"{sum(expected['output_keep'])}/{OUTPUT_TOKENS} output tokens kept")


if __name__ == "__main__":
    main()
