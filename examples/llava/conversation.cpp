// SPDX-License-Identifier: Apache-2.0
/// @file conversation.cpp
/// @brief `vicuna_v1` and the conversation's prompt.
#include "conversation.hpp"

#include <dynllava/core/error.hpp>

#include <utility>

namespace dynllava::llava {

conversation_template vicuna_v1() {
  return {
      "A chat between a curious user and an artificial intelligence assistant. The "
      "assistant gives helpful, detailed, and polite answers to the user's questions.",
      "USER", "ASSISTANT", " ", "</s>"};
}

conversation::conversation(conversation_template t) : template_(std::move(t)) {}

void conversation::add_user(std::string_view text, int images) {
  DYNLLAVA_EXPECTS(messages_.size() % 2 == 0,
                   "conversation::add_user: turn {} must be an assistant turn (turns alternate, "
                   "user first)",
                   messages_.size());
  DYNLLAVA_EXPECTS(images >= 0, "conversation::add_user: images must be >= 0, got {}", images);
  DYNLLAVA_EXPECTS(text.find(image_tag) == std::string_view::npos,
                   "conversation::add_user: the text contains \"{}\"; give images by count",
                   image_tag);
  std::string message;
  for (int i = 0; i < images; ++i) {
    message += image_tag;
    message += '\n';
  }
  message += text;
  messages_.push_back(std::move(message));
  images_ += images;
}

void conversation::add_assistant(std::string_view text) {
  DYNLLAVA_EXPECTS(messages_.size() % 2 == 1,
                   "conversation::add_assistant: turn {} must be a user turn (turns alternate, "
                   "user first)",
                   messages_.size());
  messages_.emplace_back(text);
}

std::string conversation::prompt() const {
  DYNLLAVA_EXPECTS(messages_.size() % 2 == 1,
                   "conversation::prompt: the conversation has {} turns; it must end with a user "
                   "turn",
                   messages_.size());
  std::string out = template_.system + template_.sep;
  for (std::size_t i = 0; i < messages_.size(); ++i) {
    const bool user = i % 2 == 0;
    out += user ? template_.user_role : template_.assistant_role;
    if (messages_[i].empty()) {  // LLaVA's `if message:` writes an empty turn as "ROLE:"
      out += ':';
      continue;
    }
    out += ": ";
    out += messages_[i];
    out += user ? template_.sep : template_.sep2;
  }
  out += template_.assistant_role;
  out += ':';
  return out;
}

}  // namespace dynllava::llava
