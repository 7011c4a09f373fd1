# SPDX-License-Identifier: Apache-2.0
"""The PyTorch model of tools/train_tiny_llava.py: a LLaVA-1.5-shaped model with the Dynamic-LLaVA
predictors, written out so that the training-time operators (MaskedSoftmax on layers >= the
sparse layer, hard Gumbel-Softmax keep decisions) fit in. Parameter names are the original
LLaVA / Dynamic-LLaVA checkpoint names (see `state_dict_original`), so the export is a rename-free
dump; `check_against_transformers` compares the tower and the decoder with transformers' own
`CLIPVisionModel` and `LlamaForCausalLM` on the same weights.

Shapes: B batch, T sequence rows (system + 576 image rows + text), H LLM hidden.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_ROWS = 576


# ------------------------------------------------------------------------------------------
# CLIP vision tower (pre-LayerNorm ViT, quick_gelu, class token, learned positions)


class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = (p(x).view(b, n, self.heads, hd).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, d))


class ClipMlp(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class ClipLayer(nn.Module):
    def __init__(self, d, heads, inner, eps):
        super().__init__()
        self.self_attn = ClipAttention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = ClipMlp(d, inner)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


def sincos_2d(grid, d):
    """[grid * grid + 1, d]: row 0 (the class token) zero, then row-major patches."""
    q = d // 4
    freq = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / q))
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                          torch.arange(grid, dtype=torch.float32), indexing="ij")
    ay, ax = y.reshape(-1, 1) * freq, x.reshape(-1, 1) * freq
    table = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], 1)
    return torch.cat([torch.zeros(1, d), table], 0)


class ClipEmbeddings(nn.Module):
    def __init__(self, d, patch, image):
        super().__init__()
        self.patch = patch
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.02)
        self.patch_embedding = nn.Conv2d(3, d, patch, patch, bias=False)
        self.position_embedding = nn.Embedding((image // patch) ** 2 + 1, d)
        # A 2-D sine-cosine table (half the channels for the row, half for the column), scaled
        # to the patch rows' size, in place of N(0, 1), which would drown the patch content after
        # pre_layrnorm: attention can tell near from far from the first step.
        with torch.no_grad():
            self.position_embedding.weight.copy_(sincos_2d(image // patch, d) * 0.5)

    def forward(self, pixels):
        p = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, 576, d]
        cls = self.class_embedding.expand(p.shape[0], 1, -1)
        return torch.cat([cls, p], 1) + self.position_embedding.weight


class ClipEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList(
            ClipLayer(cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"],
                      cfg["layer_norm_eps"]) for _ in range(cfg["num_hidden_layers"]))


class ClipVisionModel(nn.Module):
    """`vision_model.*` of transformers' CLIPVisionModel; `forward` returns the patch rows of the
    hidden states after `len(layers) + select_layer + 1` layers (LLaVA: layer -2, class dropped)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.embeddings = ClipEmbeddings(d, cfg["patch_size"], cfg["image_size"])
        self.pre_layrnorm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.encoder = ClipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])  # never run by LLaVA

    def forward(self, pixels, select_layer=-2):
        h = self.pre_layrnorm(self.embeddings(pixels))
        run = len(self.encoder.layers) + select_layer + 1
        for layer in self.encoder.layers[:run]:
            h = layer(h)
        return h[:, 1:]


# ------------------------------------------------------------------------------------------
# LLaMA decoder


def rope_tables(positions, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    f = positions.to(torch.float32)[..., None] * inv  # [..., T, hd/2]
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


def masked_softmax(scores, keep, causal_bias, eps=1e-6):
    """The released `softmax_with_policy`: `keep` [B, T] is a key mask (diagonal forced to 1)
    applied on top of the causal mask; fp32. scores [B, heads, T, T]."""
    b, t = keep.shape
    policy = keep.view(b, 1, 1, t)
    eye = torch.eye(t, dtype=policy.dtype, device=policy.device).view(1, 1, t, t)
    policy = policy + (1.0 - policy) * eye
    s = scores.float() + causal_bias
    s = s - s.max(-1, keepdim=True)[0]
    a = s.exp() * policy
    return (a + eps / t) / (a.sum(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        v = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(v + self.eps))


class LlamaAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.keep_qk = False
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x, cos, sin, mode, keep=None, bias=None):
        """mode "causal": plain causal attention; "masked": MaskedSoftmax with key mask `keep`
        [B, T] (training); "bias": additive float mask `bias` [B, 1, T, T] (inference)."""
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = (p(x).view(b, t, self.heads, hd).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.keep_qk:  # training: the binding loss reads this layer's queries and keys
            self.last_q, self.last_k = q, k
        if mode == "causal":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif mode == "bias":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
            o = masked_softmax(scores, keep, bias).to(v.dtype) @ v
        return self.o_proj(o.transpose(1, 2).reshape(b, t, d))


class LlamaMlp(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.gate_proj = nn.Linear(d, inner, bias=False)
        self.up_proj = nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.self_attn = LlamaAttention(d, cfg["num_attention_heads"])
        self.mlp = LlamaMlp(d, cfg["intermediate_size"])
        self.input_layernorm = RMSNorm(d, cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(d, cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, mode, keep=None, bias=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mode, keep, bias)
        return x + self.mlp(self.post_attention_layernorm(x))


# ------------------------------------------------------------------------------------------
# Dynamic-LLaVA predictors (METHOD.md section 3, reduced width)


class PredictorAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)  # no mask, scale 1/sqrt(head dim)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class PredictorMlp(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class PredictorBlock(nn.Module):
    def __init__(self, d, heads, inner):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = PredictorAttention(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = PredictorMlp(d, inner)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImagePredictor(nn.Module):
    """`model.image_score_predictor.*`: [B, N, H] -> 2-way logits [B, N, 2], channel 0 = keep."""

    def __init__(self, h, sc):
        super().__init__()
        d = sc["d_model"]
        self.local = d // 2
        self.down_mlp = nn.Sequential(nn.LayerNorm(h, eps=1e-5), nn.Linear(h, d), nn.GELU())
        self.transformer = nn.ModuleList(
            PredictorBlock(d, sc["nhead"], sc["dim_feedforward"]) for _ in range(sc["num_layers"]))
        self.output_mlp = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, d // 4),
                                        nn.GELU(), nn.Linear(d // 4, 2))

    def forward(self, x, policy=None):
        h = self.down_mlp(x)
        if policy is not None:  # training: the current keep policy zeroes dropped tokens
            h = h * policy
        for blk in self.transformer:
            h = blk(h)
        if policy is None:
            g = h[..., self.local:].mean(1, keepdim=True)
        else:
            g = (h[..., self.local:] * policy).sum(1, keepdim=True) / policy.sum(1, keepdim=True)
        z = torch.cat([h[..., :self.local], g.expand(-1, h.shape[1], -1)], -1)
        return self.output_mlp(z)


class OutputPredictor(nn.Module):
    """`model.output_text_score_predictor.*`: per-token MLP [..., H] -> [..., 2]."""

    def __init__(self, h, sc):
        super().__init__()
        d = sc["d_model"]
        self.output_mlp = nn.Sequential(
            nn.LayerNorm(h, eps=1e-5), nn.Linear(h, d), nn.GELU(), nn.Linear(d, d // 2), nn.GELU(),
            nn.Linear(d // 2, d // 4), nn.GELU(), nn.Linear(d // 4, 2))

    def forward(self, x):
        return self.output_mlp(x)


def gumbel_keep(logits, tau, generator=None):
    """Hard Gumbel-Softmax over log_softmax(logits) with straight-through gradient; returns the
    keep channel (0) [..., ] as 0/1 forward values."""
    u = torch.rand(logits.shape, generator=generator).clamp(1e-10, 1.0 - 1e-10)
    g = -torch.log(-torch.log(u))
    y_soft = ((F.log_softmax(logits.float(), -1) + g) / tau).softmax(-1)
    index = y_soft.max(-1, keepdim=True)[1]
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    return (y_hard - y_soft.detach() + y_soft)[..., 0]


# ------------------------------------------------------------------------------------------
# The whole model


class LlavaInner(nn.Module):
    """`model.*` of the original LLaVA checkpoint."""

    def __init__(self, text, vision, sparse):
        super().__init__()
        h = text["hidden_size"]
        self.embed_tokens = nn.Embedding(text["vocab_size"], h)
        self.layers = nn.ModuleList(LlamaLayer(text) for _ in range(text["num_hidden_layers"]))
        self.norm = RMSNorm(h, text["rms_norm_eps"])
        self.mm_projector = nn.Sequential(nn.Linear(vision["hidden_size"], h), nn.GELU(),
                                          nn.Linear(h, h))
        self.vision_tower = nn.Module()
        self.vision_tower.vision_tower = nn.Module()
        self.vision_tower.vision_tower.vision_model = ClipVisionModel(vision)
        self.image_score_predictor = ImagePredictor(h, sparse)
        self.output_text_score_predictor = OutputPredictor(h, sparse)


class TinyLlava(nn.Module):
    def __init__(self, text, vision, sparse, rope_theta=10000.0):
        super().__init__()
        self.text, self.vision, self.sparse = text, vision, sparse
        self.theta = rope_theta
        self.model = LlavaInner(text, vision, sparse)
        self.lm_head = nn.Linear(text["hidden_size"], text["vocab_size"], bias=False)

    def image_features(self, pixels):
        """pixels [B, 3, 336, 336] -> projected image rows [B, 576, H]."""
        f = self.model.vision_tower.vision_tower.vision_model(pixels, -2)
        self.last_tower_rows = f  # [B, 576, C], read by the training's per-patch auxiliary loss
        self.last_image_rows = self.model.mm_projector(f)  # [B, 576, H], read by the training
        return self.last_image_rows

    def embed(self, ids, image_start, pixels):
        """ids [B, T] with placeholder rows (any id) at image_start[b] .. +576."""
        x = self.model.embed_tokens(ids)
        feats = self.image_features(pixels)
        rows = []
        for b in range(ids.shape[0]):
            s = int(image_start[b])
            rows.append(torch.cat([x[b, :s], feats[b], x[b, s + IMAGE_ROWS:]], 0))
        return torch.stack(rows)

    def forward(self, ids, image_start, pixels, mode="dense", tau=1.0, out_mask=None,
                keep_image=None, gate_outputs=None, generator=None):
        """Returns (logits [B, T, V], info dict).

        mode "dense": causal attention everywhere.
        mode "train": Dynamic-LLaVA training; image keep decisions by hard Gumbel-Softmax at the
          sparse layer, output-token decisions for rows where `out_mask` [B, T] is true,
          MaskedSoftmax in layers >= sparse layer. info: image_keep [B, 576], out_keep [B, T].
        mode "infer": image rows kept: `keep_image` [B, 576] bool if given, else the top
          floor(576 * rate) by logit0 - logit1 (ties to the smaller position); generated rows
          where `gate_outputs` [B, T] is true are kept as keys iff logit0 > logit1; dropped keys
          are masked out (-inf) in layers >= sparse layer, every row still attends to itself.
        """
        b, t = ids.shape
        x = self.embed(ids, image_start, pixels)
        pos = torch.arange(t)
        cos, sin = rope_tables(pos, x.shape[-1] // self.text["num_attention_heads"], self.theta)
        l_sparse = self.sparse["sparse_layer"]
        info = {}
        causal = torch.full((t, t), float("-inf")).triu(1)
        for i, layer in enumerate(self.model.layers):
            if mode == "dense" or i < l_sparse:
                x = layer(x, cos, sin, "causal")
                continue
            if i == l_sparse:
                keys = self._decide(x, image_start, mode, tau, out_mask, keep_image, gate_outputs,
                                    generator, info)
                if mode == "infer":
                    allowed = keys[:, None, :].expand(b, t, t).clone()
                    allowed |= torch.eye(t, dtype=torch.bool)[None]
                    bias = causal[None].expand(b, t, t).masked_fill(~allowed, float("-inf"))
                    bias = bias[:, None]
            if mode == "train":
                x = layer(x, cos, sin, "masked", keep=keys, bias=causal)
            else:
                x = layer(x, cos, sin, "bias", bias=bias)
        return self.lm_head(self.model.norm(x)), info

    def _decide(self, x, image_start, mode, tau, out_mask, keep_image, gate_outputs, generator,
                info):
        b, t, _ = x.shape
        idx = torch.stack([torch.arange(int(s), int(s) + IMAGE_ROWS) for s in image_start])
        img_h = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        if mode == "train":
            policy = torch.ones(b, IMAGE_ROWS, 1)
            img_logits = self.model.image_score_predictor(img_h, policy)
            img_keep = gumbel_keep(img_logits, tau, generator)  # [B, 576] with ST gradient
            keys = torch.ones(b, t)
            keys = keys.scatter(1, idx, img_keep)
            info["image_keep"] = img_keep
            info["image_logits"] = img_logits  # [B, 576, 2], read by the training's losses
            if out_mask is not None and out_mask.any():
                out_logits = self.model.output_text_score_predictor(x)
                out_keep = gumbel_keep(out_logits, tau, generator)
                keys = torch.where(out_mask, out_keep, keys)
                info["out_keep"] = out_keep
            return keys
        img_logits = self.model.image_score_predictor(img_h)
        s = (img_logits[..., 0] - img_logits[..., 1]).float()
        info["image_score"] = s
        if keep_image is None:
            k = int(IMAGE_ROWS * self.sparse["vision_keep_rate"])
            # descending score, ties to the smaller position: a stable sort on -s
            order = torch.sort(-s, dim=1, stable=True).indices[:, :k]
            keep_image = torch.zeros(b, IMAGE_ROWS, dtype=torch.bool).scatter(1, order, True)
        info["image_keep"] = keep_image
        keys = torch.ones(b, t, dtype=torch.bool)
        keys = keys.scatter(1, idx, keep_image)
        if gate_outputs is not None:
            o = self.model.output_text_score_predictor(x)
            gate = o[..., 0] > o[..., 1]
            keys = torch.where(gate_outputs, gate, keys)
            info["out_gate"] = gate
        return keys


def state_dict_original(model):
    """The model's tensors under the original Dynamic-LLaVA names (already its own names)."""
    return {k: v.detach() for k, v in model.state_dict().items()}


@torch.no_grad()
def check_against_transformers(model, pixels, ids):
    """Max abs differences of the tower's layer -2 patch rows and the dense decoder's logits
    against transformers' CLIPVisionModel and LlamaForCausalLM loaded with the same weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    v = model.vision
    clip = CLIPVisionModel(CLIPVisionConfig(**v)).eval()
    sd = {k[len("model.vision_tower.vision_tower.vision_model."):]: t
          for k, t in model.state_dict().items() if k.startswith("model.vision_tower.")}
    if any(k.startswith("vision_model.") for k in clip.state_dict()):  # older transformers
        sd = {"vision_model." + k: t for k, t in sd.items()}
    clip.load_state_dict(sd, strict=True)
    ref = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    ours = model.model.vision_tower.vision_tower.vision_model(pixels, -2)
    d_clip = (ref - ours).abs().max().item()

    tc = dict(model.text)
    llama = LlamaForCausalLM(LlamaConfig(**tc, rope_parameters={"rope_type": "default",
                                                                  "rope_theta": model.theta},
                                         tie_word_embeddings=False)).eval()
    sd = {k: t for k, t in model.state_dict().items()
          if k.startswith("model.layers.") or k in ("model.embed_tokens.weight",
                                                     "model.norm.weight", "lm_head.weight")}
    llama.load_state_dict(sd, strict=True)
    ref = llama(input_ids=ids).logits
    x = model.model.embed_tokens(ids)
    cos, sin = rope_tables(torch.arange(ids.shape[1]),
                           tc["hidden_size"] // tc["num_attention_heads"], model.theta)
    for layer in model.model.layers:
        x = layer(x, cos, sin, "causal")
    ours = model.lm_head(model.model.norm(x))
    return d_clip, (ref - ours).abs().max().item()
