#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpora of the safetensors fuzz targets (fuzz/corpus/<target>/): small valid
inputs and one of each kind of defect the readers must refuse. Deterministic; rerun after
changing it and commit the result. Usage: python3 tools/make_fuzz_seeds.py"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fuzz" / "corpus"


def st(header, data=b""):
    h = header if isinstance(header, bytes) else header.encode()
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_seeds():
    f32 = struct.pack("<2f", 1.5, -2.0)
    f16 = bytes.fromhex("003c00c0ff7b")
    bf16 = bytes.fromhex("803f00bf")
    yield "valid_three_dtypes", st(json.dumps({
        "a": entry("F32", [2], 0, 8), "b": entry("F16", [3, 1], 8, 14),
        "c": entry("BF16", [2], 14, 18), "__metadata__": {"format": "pt"}}), f32 + f16 + bf16)
    yield "valid_empty", st("{}")
    yield "valid_zero_size", st(json.dumps({"z": entry("F32", [0, 3], 0, 0)}))
    yield "valid_int_and_f8", st(json.dumps({"i": entry("I32", [1], 0, 4),
                                             "q": entry("F8_E4M3", [4], 4, 8)}), bytes(8))
    yield "valid_escaped_names", st(json.dumps({"n\u0000ul\u00e9\n": entry("F32", [1], 0, 4)}),
                                    bytes(4))
    yield "valid_rank_16", st(json.dumps({"r": entry("BF16", [1] * 16, 0, 2)}), bytes(2))
    yield "bad_truncated", b"\x05\x00\x00"
    yield "bad_header_length", st("{}")[:8].replace(b"\x02", b"\xff") + b"{}"
    yield "bad_json", st("{not json")
    yield "bad_top_array", st("[1,2]")
    yield "bad_overlap", st(json.dumps({"a": entry("F32", [2], 0, 8),
                                        "b": entry("F32", [1], 4, 8)}), f32)
    yield "bad_hole", st(json.dumps({"a": entry("F32", [1], 4, 8)}), f32)
    yield "bad_size", st(json.dumps({"a": entry("F32", [3], 0, 8)}), f32)
    yield "bad_negative_dim", st('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', f32)
    yield "bad_rank_17", st(json.dumps({"r": entry("BF16", [1] * 17, 0, 2)}), bytes(2))
    yield "bad_duplicate", st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                              '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32)
    yield "bad_nesting", st('{"a":{"dtype":"F32","shape":' + "[" * 2000 + "]" * 2000 + "}}")
    yield "bad_dtype", st(json.dumps({"a": entry("Q4", [2], 0, 8)}), f32)
    yield "bad_unknown_field", st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}',
                                  f32)
    yield "bad_metadata", st('{"__metadata__":{"k":{"deep":1}}}')
    yield "bad_huge_shape", st('{"a":{"dtype":"F32","shape":[4294967296,4294967296],'
                               '"data_offsets":[0,8]}}', f32)
    yield "bad_many_empty_objects", st("{" + ",".join(f'"{i}":{{}}' for i in range(200)) + "}")


def index_seeds():
    def idx(weight_map, **extra):
        return json.dumps({"metadata": {"total_size": 14}, **extra, "weight_map": weight_map})
    yield "valid_two_shards", idx({"x": "a.safetensors", "y": "a.safetensors",
                                   "z": "b.safetensors"})
    yield "valid_link", idx({"x": "link.safetensors", "y": "link.safetensors",
                             "z": "b.safetensors"})
    yield "bad_missing_tensor", idx({"x": "a.safetensors", "z": "b.safetensors"})
    yield "bad_wrong_shard", idx({"x": "a.safetensors", "y": "b.safetensors",
                                  "z": "b.safetensors"})
    yield "bad_two_shards", idx({"x": "a.safetensors", "y": "a.safetensors",
                                 "z": "b.safetensors", "q": "link.safetensors"})
    yield "bad_dotdot", idx({"x": "../a.safetensors"})
    yield "bad_absolute", idx({"x": "/etc/hostname"})
    yield "bad_subfolder", idx({"x": "sub/a.safetensors"})
    yield "bad_directory", idx({"x": "sub"})
    yield "bad_missing_file", idx({"x": "c.safetensors"})
    yield "bad_nul_name", idx({"x\u0000y": "a\u0000.safetensors"})
    yield "bad_no_map", json.dumps({"metadata": {}})
    yield "bad_map_type", '{"weight_map": 3}'
    yield "bad_duplicate_key", ('{"weight_map":{"x":"a.safetensors","x":"b.safetensors",'
                                '"y":"a.safetensors","z":"b.safetensors"}}')
    yield "bad_json", '{"weight_map": {"x": "a.safetensors"'
    yield "bad_nesting", '{"metadata":' + "[" * 100 + "]" * 100 + ',"weight_map":{}}'


for name, seeds in (("safetensors_file", safetensors_seeds()), ("checkpoint_index", index_seeds())):
    out = ROOT / name
    out.mkdir(parents=True, exist_ok=True)
    for seed, data in seeds:
        (out / seed).write_bytes(data if isinstance(data, bytes) else data.encode())
