# What the compiler can do with C++20 library features that flock's examples, README blocks and
# tests use, but flock's headers do not: Clang before 17 cannot use libstdc++ 12's <ranges> views
# (iota_view, filter_view...) nor deduce a class template from designated initializers. What needs
# them is then left out, with a message, so that a plain build works with any supported compiler.
include_guard(GLOBAL)
include(CheckCXXSourceCompiles)
set(CMAKE_REQUIRED_QUIET ON)
set(CMAKE_REQUIRED_FLAGS -std=c++20)
check_cxx_source_compiles([=[
#include <ranges>
int main() {
  int sum = 0;
  for (int x : std::views::iota(0, 4) | std::views::transform([](int v) { return v * 2; })) sum += x;
  return sum == 12 ? 0 : 1;
}
]=] FLOCK_STD_VIEWS_WORK)
check_cxx_source_compiles([=[
template <class T> struct Pair { int first; T second; };
int main() {
  Pair p{.first = 1, .second = 2.0};
  return p.first == 1 ? 0 : 1;
}
]=] FLOCK_DESIGNATED_CTAD_WORKS)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_QUIET)
