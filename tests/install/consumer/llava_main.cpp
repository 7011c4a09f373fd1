// SPDX-License-Identifier: Apache-2.0
// Uses the installed LLaVA support library: loads a SentencePiece model (argv[1]) and tokenises
// a vicuna_v1 prompt with an image, and computes the pixel values of a small image with the
// preprocessing of a loaded model folder's description.
#include <dynllava/llava/prompt_tokens.hpp>
#include <dynllava/model/image_preprocess.hpp>

#include <clip_preprocess.hpp>
#include <conversation.hpp>
#include <cstdint>
#include <cstdio>
#include <tokenizer.hpp>

int main(int argc, char** argv) {
  namespace ll = dynllava::llava;
  if (argc != 2) {
    std::printf("usage: consumer_llava tokenizer.model\n");
    return 2;
  }
  const ll::tokenizer tok = ll::tokenizer::load(argv[1]);
  ll::conversation conv(ll::vicuna_v1());
  conv.add_user("What is shown?", 1);
  const auto ids = ll::tokenize_prompt(tok, conv.prompt(), -200);
  int images = 0;
  for (const auto id : ids) images += id == -200 ? 1 : 0;

  dynllava::image_preprocess p;
  p.shortest_edge = p.crop_height = p.crop_width = 28;
  ll::rgb_image img;
  img.width = 40;
  img.height = 20;
  img.pixels.assign(static_cast<std::size_t>(3 * img.width * img.height), 200);
  const auto px = ll::clip_pixel_values(img, ll::preprocess_options(p));

  const bool ok = ids.front() == tok.bos_id() && images == 1 && px.size() == 3u * 28u * 28u;
  std::printf("consumer_llava: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
