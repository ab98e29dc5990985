// flock internals: readable type names for messages (codec errors, a task's exception type).
#pragma once

#include "config.hpp"

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <cxxabi.h>
#include <typeinfo>
#endif

namespace flockmp::detail {

/// The demangled form of a name from `typeid(...).name()`, or the name itself when it cannot be
/// demangled (another ABI, or not a mangled name at all).
FLOCK_ENGINE_INLINE std::string demangle(const char* mangledName);

/// Shortens the spellings libstdc++ gives common types, so that messages say
/// `std::map<int, std::string>` rather than `std::map<int, std::__cxx11::basic_string<char,
/// std::char_traits<char>, std::allocator<char> >, std::less<int>, std::allocator<...> >`: drops
/// `__cxx11`, names std::string, and removes the default template arguments (allocators,
/// comparators, hashers, char traits, deleters).
FLOCK_ENGINE_INLINE std::string tidyTypeName(std::string name);

/// A readable name of T for messages, e.g. `std::vector<int, std::allocator<int> >`. References
/// and cv-qualifiers are dropped (as typeid does).
template <class T>
std::string typeName() {
  // Computed once per type: messages are built on error paths, sometimes in a loop.
  static const std::string name = tidyTypeName(demangle(typeid(T).name()));
  return name;
}

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE std::string demangle(const char* mangledName) {
  if (mangledName == nullptr) return {};
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out{
      abi::__cxa_demangle(mangledName, nullptr, nullptr, &status), std::free};
  if (status != 0 || !out) return mangledName;
  return out.get();
}

FLOCK_ENGINE_INLINE std::string tidyTypeName(std::string name) {
  // Builds a new string rather than calling std::string::replace, which trips a false
  // -Wrestrict in g++ 12 at -O2 and above.
  auto replaceAll = [&](std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(name.size());
    std::size_t start = 0;
    for (auto pos = name.find(from); pos != std::string::npos; pos = name.find(from, start)) {
      out.append(name, start, pos - start).append(to);
      start = pos + from.size();
    }
    out.append(name, start);
    name = std::move(out);
  };
  replaceAll("std::__cxx11::", "std::");
  replaceAll("std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
             "std::string");
  replaceAll("std::basic_string_view<char, std::char_traits<char> >", "std::string_view");
  constexpr std::string_view defaults[] = {", std::allocator<",   ", std::less<",
                                           ", std::hash<",        ", std::equal_to<",
                                           ", std::char_traits<", ", std::default_delete<"};
  for (std::string_view d : defaults) {
    for (auto pos = name.find(d); pos != std::string::npos; pos = name.find(d, pos)) {
      // Remove ", std::allocator<...>" up to its matching '>'.
      std::size_t i = pos + d.size();
      for (int depth = 1; i < name.size() && depth > 0; ++i) {
        if (name[i] == '<')
          ++depth;
        else if (name[i] == '>')
          --depth;
      }
      name.erase(pos, i - pos);
    }
  }
  replaceAll(" >", ">");
  return name;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
