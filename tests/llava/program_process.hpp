// SPDX-License-Identifier: Apache-2.0
/// @file program_process.hpp
/// @brief Running a built program from a test: a scratch folder per process, and one run with
/// its exit status, stdout and stderr captured apart.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace dynllava::llava::test {

/// A folder under the temporary directory named `<stem>_<pid>`, created on construction and
/// removed with everything in it on destruction.
class scratch_folder {
 public:
  explicit scratch_folder(const std::string& stem)
      : path_(std::filesystem::temp_directory_path() / (stem + "_" + std::to_string(getpid()))) {
    std::filesystem::create_directories(path_);
  }
  scratch_folder(const scratch_folder&) = delete;
  scratch_folder& operator=(const scratch_folder&) = delete;
  ~scratch_folder() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// `s` as one single-quoted POSIX shell word.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// The whole file as bytes (empty when it cannot be read).
inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// How one run ended: the exit code (128 + signal when killed) and what it wrote.
struct outcome {
  int status = -1;
  std::string out, err;
};

/// @brief Runs `program` with `args` through the shell; stdout and stderr go to files in
/// `scratch` (overwritten by the next run) and come back in the outcome.
inline outcome run_process(const std::string& program, const std::vector<std::string>& args,
                           const std::filesystem::path& scratch) {
  const auto out_file = scratch / "stdout.txt", err_file = scratch / "stderr.txt";
  std::string cmd = shell_quote(program);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(out_file.string()) + " 2>" + shell_quote(err_file.string());
  const int raw = std::system(cmd.c_str());
  outcome o;
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  o.out = read_text(out_file);
  o.err = read_text(err_file);
  return o;
}

}  // namespace dynllava::llava::test
