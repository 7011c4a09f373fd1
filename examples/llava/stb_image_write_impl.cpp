// SPDX-License-Identifier: Apache-2.0
/// @file stb_image_write_impl.cpp
/// @brief The one translation unit that compiles stb_image_write (Debian libstb-dev): encoding
/// to memory only (the Figure-6 page embeds PNGs as data URIs), never to files.
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
