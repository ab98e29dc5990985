// Catch2 v3 and Debian 12's Catch2 2.13 have different headers and matcher names; tests include
// this shim and use flockmp::test::contains for substring checks.
#pragma once
#include <string>
#if defined(FLOCK_CATCH_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

namespace flockmp::test {
inline auto contains(const std::string& s) {
#if defined(FLOCK_CATCH_V3)
  return Catch::Matchers::ContainsSubstring(s);
#else
  return Catch::Matchers::Contains(s);
#endif
}
} // namespace flockmp::test
