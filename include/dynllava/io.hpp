// SPDX-License-Identifier: Apache-2.0
/// @file io.hpp
/// @brief Umbrella header of the io tier (`dynllava::io`): the nn tier (`nn.hpp`) plus reading
/// checkpoints (safetensors files, sharded indexes, the predictors, the LLaMA decoder, the CLIP
/// tower and the projector by their state-dict names), LLaVA `config.json` files and whole
/// LLaVA model folders (`load_llava`).
/// Needs nlohmann-json on top of BLAS; no CUDA.
#pragma once

#include <dynllava/io/json_document.hpp>
#include <dynllava/io/load_clip.hpp>
#include <dynllava/io/load_llama.hpp>
#include <dynllava/io/load_llava.hpp>
#include <dynllava/io/load_predictors.hpp>
#include <dynllava/io/read_clip_config.hpp>
#include <dynllava/io/read_image_preprocess.hpp>
#include <dynllava/io/read_llava_config.hpp>
#include <dynllava/io/read_tensor.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/nn.hpp>
