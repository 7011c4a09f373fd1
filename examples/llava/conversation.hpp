// SPDX-License-Identifier: Apache-2.0
/// @file conversation.hpp
/// @brief LLaVA-1.5's `vicuna_v1` conversation template and a multi-turn conversation.
///
/// The prompt is the released LLaVA code's `conv_vicuna_v1.get_prompt()` (separator style
/// TWO): `system + " "`, then per turn `role + ": " + message` followed by `sep` (" ") after a
/// user turn and `sep2` ("</s>") after an assistant turn, and `"ASSISTANT:"` for the turn to be
/// generated. Images are `"<image>\n"` in front of the user's text, as LLaVA's `cli.py` and
/// `model_vqa.py` put them:
///
///     A chat between ... questions. USER: <image>\nWhat is shown? ASSISTANT: A bus.</s>USER:
///     And its colour? ASSISTANT:
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// The text that stands for one image in a prompt (LLaVA's `DEFAULT_IMAGE_TOKEN`).
inline constexpr std::string_view image_tag = "<image>";

/// A conversation template with separator style TWO (the only one LLaVA-1.5 uses).
struct conversation_template {
  std::string system;          ///< text before the first turn
  std::string user_role;       ///< "USER"
  std::string assistant_role;  ///< "ASSISTANT"
  std::string sep;             ///< after the system text and after each user turn: " "
  std::string sep2;            ///< after each assistant turn: "</s>"
};

/// LLaVA-1.5's `conv_vicuna_v1`.
[[nodiscard]] conversation_template vicuna_v1();

/// Turns of one conversation, user first, user and assistant alternating.
class conversation {
 public:
  explicit conversation(conversation_template t = vicuna_v1());

  /// Adds a user turn with `images` images in front of `text` (`"<image>\n"` each).
  /// @throws dynllava::error when the previous turn is a user turn, `images < 0`, or `text`
  ///         contains `"<image>"` (images are given by count, so a typed tag cannot add one).
  void add_user(std::string_view text, int images = 0);
  /// Adds the assistant's answer to the previous user turn (as generated, without "</s>").
  /// @throws dynllava::error when the previous turn is not a user turn.
  void add_assistant(std::string_view text);

  /// The prompt for generating the next answer: every turn, ending with `"ASSISTANT:"`.
  /// @throws dynllava::error when the conversation does not end with a user turn.
  [[nodiscard]] std::string prompt() const;
  /// Images in the prompt, in order.
  [[nodiscard]] int images() const noexcept { return images_; }
  [[nodiscard]] std::size_t turns() const noexcept { return messages_.size(); }
  [[nodiscard]] const conversation_template& format() const noexcept { return template_; }

 private:
  conversation_template template_;
  std::vector<std::string> messages_;  // user, assistant, user, ...
  int images_ = 0;
};

}  // namespace dynllava::llava
