#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the image fixtures of the LLaVA example's preprocessing tests.

Each test image is synthetic and deterministic (gradients, sharp edges, a little noise). For
each one the tool writes, into the output folder (tests/fixtures/images/):

  <name>.<png|jpg>       the input file
  <name>.rgb.png         PIL.Image.open(f).convert("RGB"): what LLaVA decodes
  <name>.pad336.png      the 8-bit image after LLaVA-1.5's expand2square (colour int(255 *
                         mean)) and transformers' PIL CLIPImageProcessor resize + centre crop
  <name>.square336.png   the same without expand2square (image_aspect_ratio "square"), for
                         the cases in SQUARE
  bomb_16x16.png         a 16x16 PNG whose data inflates to 16 MiB (the decoder budget test)
  normalize_table.f32    the processor's pixel_values for every 8-bit value: float32 little
                         endian [3, 256]; pixel_values[c, y, x] == table[c, u8[y, x, c]]

The tool checks that claim: for every image and mode it runs the full processor (rescale and
normalise on) and asserts that its pixel_values equal the table looked up at the 8-bit image,
bit for bit, so the 8-bit PNGs plus the table are the whole reference.

The processor is transformers' PIL backend (CLIPImageProcessorPil, i.e. use_fast=False),
which is what LLaVA's released code runs. Requires pillow, numpy, transformers.

    python3 tools/image_reference.py tests/fixtures/images
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SQUARE = ("wide_500x375", "portrait_40x90")


def processor(normalise: bool) -> CLIPImageProcessorPil:
    # The clip-vit-large-patch14-336 preprocessor_config.json.
    return CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                 resample=3, do_center_crop=True, do_resize=True,
                                 do_rescale=normalise, do_normalize=normalise,
                                 image_mean=list(MEAN), image_std=list(STD))


def expand2square(img: Image.Image, colour) -> Image.Image:
    """LLaVA-1.5's padding: a max(w, h) square of `colour`, the image centred (floor)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), colour)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def gradient(w: int, h: int, seed: int, noise: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin((x + 2 * y) / 7.0)
    img = np.stack([r, g, b], axis=-1)
    # Sharp edges: a dark box and a bright diagonal band.
    img[h // 4:h // 2, w // 5:w // 2] = (10, 240, 30)
    img[(np.abs(x - y * w / h) < 2)] = (250, 250, 250)
    if noise:
        ny, nx = min(h, 24), min(w, 24)
        img[:ny, :nx] += rng.randint(-noise, noise + 1, size=(ny, nx, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png16(arr: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def png_adam7(arr: np.ndarray) -> bytes:
    """An 8-bit RGB PNG, Adam7-interlaced, written by hand (PIL cannot write interlaced PNG)."""
    h, w = arr.shape[:2]
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def encode(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **kw)
    return buf.getvalue()


def cases() -> dict:
    out = {}
    out["landscape_64x48.png"] = encode(Image.fromarray(gradient(64, 48, 1, noise=40)), format="PNG")
    out["portrait_40x90.png"] = encode(Image.fromarray(gradient(40, 90, 2, noise=60)), format="PNG")
    out["wide_500x375.png"] = encode(Image.fromarray(gradient(500, 375, 3, noise=30)), format="PNG",
                                     optimize=True)
    out["grey_70x50.png"] = encode(Image.fromarray(gradient(70, 50, 4, noise=20)).convert("L"),
                                   format="PNG")
    rgba = gradient(48, 64, 5, noise=20)
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (64, 1))[..., None]
    out["rgba_48x64.png"] = encode(Image.fromarray(np.concatenate([rgba, alpha], -1), "RGBA"),
                                   format="PNG")
    la = np.stack([gradient(36, 20, 6)[..., 0], np.full((20, 36), 7, np.uint8)], -1)
    out["grey_alpha_36x20.png"] = encode(Image.fromarray(la, "LA"), format="PNG")
    pal = Image.fromarray(gradient(60, 60, 7, noise=50)).quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    out["palette_60x60.png"] = encode(pal, format="PNG", transparency=3)
    grey16 = (np.mgrid[0:30, 0:50][1] * 9 + np.mgrid[0:30, 0:50][0]).astype(np.uint16)  # 0..470
    out["grey16_50x30.png"] = png16(grey16, 0)
    rgb16 = (gradient(30, 50, 8, noise=30).astype(np.uint16) * 257 + 99).astype(np.uint16)
    out["rgb16_30x50.png"] = png16(rgb16, 2)
    rgba16 = np.concatenate([gradient(20, 12, 11, noise=30), gradient(20, 12, 12)[..., :1]], -1)
    out["rgba16_20x12.png"] = png16(rgba16.astype(np.uint16) * 257 + 77, 6)
    la16 = np.stack([gradient(12, 20, 13, noise=30)[..., 1], gradient(12, 20, 14)[..., 0]], -1)
    out["grey_alpha16_12x20.png"] = png16(la16.astype(np.uint16) * 257 + 200, 4)
    out["interlaced_27x13.png"] = png_adam7(gradient(27, 13, 15, noise=40))
    y, x = np.mgrid[0:32, 0:48]
    cmyk = np.stack([x * 5, y * 7, (x + y) * 3, np.full_like(x, 40)], -1).astype(np.uint8)
    out["cmyk_48x32.jpg"] = encode(Image.fromarray(cmyk, "CMYK"), format="JPEG", quality=95)
    jpg = Image.fromarray(gradient(120, 90, 9, noise=30))
    out["baseline_120x90.jpg"] = encode(jpg, format="JPEG", quality=90)
    out["progressive_90x120.jpg"] = encode(Image.fromarray(gradient(90, 120, 10, noise=30)),
                                           format="JPEG", quality=85, progressive=True)
    return out


def bomb() -> bytes:
    """A valid-looking 16x16 grey PNG whose data inflates to 16 MiB (the decoder must stop)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(16 << 20), 9)) + chunk(b"IEND", b""))


def eight_bit(img: Image.Image, pad: bool) -> np.ndarray:
    if pad:
        img = expand2square(img, tuple(int(x * 255) for x in MEAN))
    v = processor(False)(img, return_tensors="np")["pixel_values"][0]
    assert np.array_equal(v, np.round(v)) and v.min() >= 0 and v.max() <= 255
    return np.moveaxis(v, 0, -1).astype(np.uint8)  # [336, 336, 3]


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    # The normalisation of every 8-bit value, taken from the processor itself (no resize).
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, 2))
    table = processor(True)(ramp, do_resize=False, do_center_crop=False,
                            return_tensors="np")["pixel_values"][0][:, 0, :]  # [3, 256]
    table = np.ascontiguousarray(table, dtype="<f4")
    with open(os.path.join(out_dir, "normalize_table.f32"), "wb") as f:
        f.write(table.tobytes())
    with open(os.path.join(out_dir, "bomb_16x16.png"), "wb") as f:
        f.write(bomb())
    for file, data in cases().items():
        name = file.rsplit(".", 1)[0]
        with open(os.path.join(out_dir, file), "wb") as f:
            f.write(data)
        rgb = Image.open(io.BytesIO(data)).convert("RGB")  # what LLaVA does
        # convert("RGB") keeps a tRNS colour key in info["transparency"]; transformers 5's
        # convert_to_rgb then composites the key's pixels onto white, but only when the image
        # reaches it unpadded (expand2square's new canvas has no info). LLaVA's released code
        # (transformers 4.37, whose convert_to_rgb leaves RGB images alone) never does this:
        # follow it.
        rgb.info.pop("transparency", None)
        rgb.save(os.path.join(out_dir, name + ".rgb.png"), optimize=True)
        for mode in ("pad", "square") if name in SQUARE else ("pad",):
            u8 = eight_bit(rgb, mode == "pad")
            img = expand2square(rgb, tuple(int(x * 255) for x in MEAN)) if mode == "pad" else rgb
            full = processor(True)(img, return_tensors="np")["pixel_values"][0]
            looked_up = table[np.arange(3)[:, None, None], np.moveaxis(u8, -1, 0)]
            assert np.array_equal(full, looked_up), (file, mode)
            Image.fromarray(u8).save(os.path.join(out_dir, f"{name}.{mode}336.png"), optimize=True)
        print(f"{file}: {len(data)} bytes, PIL mode {Image.open(io.BytesIO(data)).mode}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/images")
