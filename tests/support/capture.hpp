// Test helper: the test process's own stdout and stderr (fds 1 and 2) sent to temporary files
// while a call runs, then read back. Files, not pipes: nothing has to read while the call runs.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace flockmp::test {

class StdCapture {
public:
  StdCapture() {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    for (int k = 0; k < 2; ++k) {
      paths_[k] = (dir_.path / (k == 0 ? "stdout" : "stderr")).string();
      const int fd = ::open(paths_[k].c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) throw std::runtime_error("cannot create " + paths_[k]);
      saved_[k] = ::fcntl(k + 1, F_DUPFD_CLOEXEC, 3);
      ::dup2(fd, k + 1);
      ::close(fd);
    }
  }
  /// Restores fds 1 and 2 and returns what was written to them: {stdout, stderr}.
  std::pair<std::string, std::string> stop() {
    restore();
    return {read(0), read(1)};
  }
  ~StdCapture() { restore(); }
  StdCapture(const StdCapture&) = delete;
  StdCapture& operator=(const StdCapture&) = delete;

  /// The capture file behind fd 1 (k = 0) or fd 2 (k = 1).
  [[nodiscard]] const std::string& path(int k) const { return paths_[k]; }

private:
  void restore() {
    if (saved_[0] < 0) return;
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    for (int k = 0; k < 2; ++k) {
      ::dup2(saved_[k], k + 1);
      ::close(saved_[k]);
      saved_[k] = -1;
    }
  }
  std::string read(int k) const {
    std::ifstream in(paths_[k], std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  TempDir dir_{"flock-capture"};
  std::string paths_[2];
  int saved_[2] = {-1, -1};
};

/// `text` cut at each newline (a last piece without one is kept).
inline std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t nl = text.find('\n', at);
    if (nl == std::string::npos) {
      lines.push_back(text.substr(at));
      break;
    }
    lines.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }
  return lines;
}

} // namespace flockmp::test
