// SPDX-License-Identifier: Apache-2.0
/// @file mapped_file.hpp
/// @brief A whole file mapped read-only into memory (POSIX mmap).
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <cerrno>
#include <cstddef>
#include <fcntl.h>
#include <filesystem>
#include <span>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace dynllava::io {

/// @brief Owns a read-only, private mapping of a whole regular file (symbolic links followed).
/// The bytes stay valid, at the same address, for the object's lifetime (moves included) and
/// are paged in on first touch, so mapping a 14 GB file costs address space, not memory. The
/// file must not be truncated while mapped (reading a vanished page raises SIGBUS).
class mapped_file {
 public:
  /// Maps `path`. @throws dynllava::error when it is missing, a directory, not a regular file,
  /// or cannot be opened or mapped.
  explicit mapped_file(const std::filesystem::path& path) {
    const std::string where = quote_untrusted(path.string());
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not regular).
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const int e = errno;
      DYNLLAVA_EXPECTS(e != ENOENT, "{} does not exist (or is a broken link)", where);
      DYNLLAVA_FAIL("cannot open {}: {}", where, std::generic_category().message(e));
    }
    struct stat st {};
    const int stat_rc = ::fstat(fd, &st);
    const int stat_errno = errno;
    if (stat_rc != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      DYNLLAVA_EXPECTS(stat_rc == 0, "cannot stat {}: {}", where,
                       std::generic_category().message(stat_errno));
      DYNLLAVA_EXPECTS(!S_ISDIR(st.st_mode), "{} is a directory, not a file", where);
      DYNLLAVA_FAIL("{} is not a regular file", where);
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int e = errno;
      ::close(fd);
      DYNLLAVA_EXPECTS(p != MAP_FAILED, "cannot map {} ({} bytes): {}", where, size_,
                       std::generic_category().message(e));
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }

  mapped_file(mapped_file&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  /// The file's bytes (host memory, read-only, empty for an empty file).
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace dynllava::io
