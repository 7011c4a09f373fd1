// SPDX-License-Identifier: Apache-2.0
/// @file nn.hpp
/// @brief Umbrella header of the nn tier (`dynllava::nn`): the host tier (`dynllava.hpp`) plus
/// what computes with weights on the CPU (fp32 building blocks on BLAS, the learned predictors,
/// the models). Needs BLAS (OpenBLAS); no JSON, no CUDA. The pipeline drivers, generic over the
/// concepts, are in the host tier.
#pragma once

#include <dynllava/dynllava.hpp>
#include <dynllava/model/clip.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/image_preprocess.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/model/llava_layout.hpp>
#include <dynllava/model/llava_model.hpp>
#include <dynllava/model/projector.hpp>
#include <dynllava/model/prompt_rows.hpp>
#include <dynllava/nn/activations.hpp>
#include <dynllava/nn/attention.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/blas_core.hpp>
#include <dynllava/nn/layer_norm.hpp>
#include <dynllava/nn/linear.hpp>
#include <dynllava/nn/pointwise.hpp>
#include <dynllava/nn/rms_norm.hpp>
#include <dynllava/nn/rope.hpp>
#include <dynllava/nn/stored_matrix.hpp>
#include <dynllava/nn/tensor_table.hpp>
#include <dynllava/nn/widen.hpp>
#include <dynllava/score/image_predictor.hpp>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/predictor_weights.hpp>
#include <dynllava/score/random_weights.hpp>
