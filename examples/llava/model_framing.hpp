// SPDX-License-Identifier: Apache-2.0
/// @file model_framing.hpp
/// @brief Checks of a serialised SentencePiece model made before SentencePiece sees it.
#pragma once

#include <cstddef>
#include <string_view>

namespace dynllava::llava::detail {

/// Walks the protobuf wire format of a `ModelProto` (every field's tag, wire type and length
/// within the buffer, nested messages of the fields below included) and refuses a normaliser
/// or denormaliser table (`precompiled_charsmap`, fields 3.2 and 5.2): LLaMA's model has none,
/// and SentencePiece uses such a table without validating it (a corrupt one makes `Encode`
/// read out of bounds), and pieces SentencePiece cannot put in its trie (empty, with a NUL byte,
/// repeated: it aborts on those). O(size); one set of piece views as extra memory.
/// @throws dynllava::error naming `name`, the byte offset and the problem.
/// Also refuses more than `max_pieces` pieces, before SentencePiece allocates for them.
void check_model_framing(std::string_view model, std::string_view name, std::size_t max_pieces);

}  // namespace dynllava::llava::detail
