// Test helpers shared by the test binaries: input ranges, temporary directories, context names.
#pragma once

#include <stdlib.h>

#include <cstddef>
#include <filesystem>
#include <numeric>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <flock/options.hpp>

// Clang before 17 cannot use libstdc++ 12's <ranges> views (iota_view, filter_view...: their
// view_interface fails to instantiate there), nor deduce a class template from designated
// initializers. flock's headers use neither; the tests of computed ranges (std::views) are left
// out with those compilers.
#if defined(__clang__) && __clang_major__ < 17
#define FLOCK_TEST_DESIGNATED_CTAD 0
#else
#define FLOCK_TEST_DESIGNATED_CTAD 1
#endif
#if defined(__clang__) && __clang_major__ < 17 && defined(__GLIBCXX__)
#define FLOCK_TEST_STD_VIEWS 0
#else
#define FLOCK_TEST_STD_VIEWS 1
#endif

namespace flockmp::test {

/// The name of a context, for CAPTURE in tests that run under each.
inline const char* nameOf(Context c) {
  switch (c) {
  case Context::fork: return "fork";
  case Context::forkserver: return "forkserver";
  case Context::spawn: return "spawn";
  }
  return "?";
}

/// 0, 1, ..., n - 1.
inline std::vector<int> range(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

/// A fresh directory under the system's temporary directory, removed with all it holds.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "flock-test") {
    std::string t = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + t);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

} // namespace flockmp::test
