// flock internals: aggregate reflection for the codec. An aggregate is carried field by field
// through structured bindings, so users write no code for plain structs.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <type_traits>
#include <utility>

namespace flockmp::detail {

/// A list of types, used to name an aggregate's fields (and a container's components).
template <class... Ts>
struct TypeList {};

/// Most fields an aggregate may have to be carried without a hook.
inline constexpr std::size_t maxAggregateFields = 32;

/// Converts to any field type; only named in unevaluated contexts (the body, never run, keeps
/// clang from warning that a used function of internal linkage is undefined). It refuses T's own
/// bases (so an aggregate with a base class is not mistaken for one with more fields) and union
/// types (so an anonymous union member, which structured bindings reject, makes the counts
/// disagree).
template <class T>
struct AnyField {
  template <class U>
  requires(!std::is_base_of_v<std::remove_cvref_t<U>, T> &&
           !std::is_union_v<std::remove_cvref_t<U>>)
  operator U() const noexcept {
    std::abort();
  } // NOLINT: implicit on purpose
};

template <class T, std::size_t... I>
consteval bool braceInitializable(std::index_sequence<I...> /*unused*/) {
  return requires { T{(void(I), AnyField<T>{})...}; };
}

// The largest N for which T{any x N} (or T(any x N)) is valid. Not the first failure: a field
// without a default (say, of a type with no default constructor) makes shorter lists invalid.
template <class T, std::size_t... N>
consteval std::size_t maxBraceCount(std::index_sequence<N...> /*unused*/) {
  std::size_t best = 0;
  ((braceInitializable<T>(std::make_index_sequence<N>{}) ? (best = N) : 0), ...);
  return best;
}

#if defined(__cpp_aggregate_paren_init) && __cpp_aggregate_paren_init >= 201902L

template <class T, std::size_t... I>
consteval bool parenInitializable(std::index_sequence<I...> /*unused*/) {
  return requires { T((void(I), AnyField<T>{})...); };
}

template <class T, std::size_t... N>
consteval std::size_t maxParenCount(std::index_sequence<N...> /*unused*/) {
  std::size_t best = 0;
  ((parenInitializable<T>(std::make_index_sequence<N>{}) ? (best = N) : 0), ...);
  return best;
}

/// Whether the brace count of T is its number of fields. Parentheses (C++20 parenthesized
/// aggregate init) never elide braces: they stop at a C array member, which braces count once
/// per element, and at a base class, which AnyField refuses. So the counts agree only when every
/// element is one field.
template <class T, std::size_t braces>
consteval bool braceCountIsFieldCount() {
  return maxParenCount<T>(std::make_index_sequence<maxAggregateFields + 2>{}) == braces;
}

#else

// Compilers without parenthesized aggregate init (clang before 16): each `{}` initializes exactly
// one element, a C array included, so a count of empty braces differs from the brace count of
// AnyField when a C array member made the latter elide. A base class is found directly.

template <class T, std::size_t N>
consteval bool emptyBraceInitializable() {
  if constexpr (N == 0) return requires {
      T{};
    };
  else if constexpr (N == 1)
    return requires { T{{}}; };
  else if constexpr (N == 2)
    return requires { T{{}, {}}; };
  else if constexpr (N == 3)
    return requires { T{{}, {}, {}}; };
  else if constexpr (N == 4)
    return requires { T{{}, {}, {}, {}}; };
  else if constexpr (N == 5)
    return requires { T{{}, {}, {}, {}, {}}; };
  else if constexpr (N == 6)
    return requires { T{{}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 7)
    return requires { T{{}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 8)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 9)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 10)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 11)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 12)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 13)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 14)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 15)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 16)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 17)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 18)
    return requires { T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}; };
  else if constexpr (N == 19)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 20)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 21)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 22)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 23)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 24)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 25)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 26)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 27)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 28)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 29)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 30)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 31)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 32)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 33)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else if constexpr (N == 34)
    return requires {
      T{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {},
        {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    };
  else
    return false;
}

template <class T, std::size_t... N>
consteval std::size_t maxEmptyBraceCount(std::index_sequence<N...> /*unused*/) {
  std::size_t best = 0;
  ((emptyBraceInitializable<T, N>() ? (best = N) : 0), ...);
  return best;
}

/// Converts only to T's base classes: T{AnyBase<T>{}} is valid when T's first element is a base.
template <class T>
struct AnyBase {
  template <class U>
  requires(std::is_base_of_v<U, T> && !std::is_same_v<U, T>) operator U() const noexcept {
    std::abort();
  } // NOLINT: implicit on purpose
};

template <class T, std::size_t braces>
consteval bool braceCountIsFieldCount() {
  if constexpr (requires { T{AnyBase<T>{}}; })
    return false;
  else
    return maxEmptyBraceCount<T>(std::make_index_sequence<maxAggregateFields + 2>{}) == braces;
}

#endif

/// Number of fields of aggregate T, or -1 when T cannot be safely decomposed (then it needs a
/// hook, unless it is trivially copyable): a base class, a C array or anonymous union member,
/// more than maxAggregateFields fields, or a non-empty type that takes no field.
template <class T>
consteval int aggregateFieldCount() {
  if constexpr (!std::is_aggregate_v<T> || std::is_union_v<T> || std::is_array_v<T>) {
    return -1;
  } else {
    constexpr std::size_t braces =
        maxBraceCount<T>(std::make_index_sequence<maxAggregateFields + 2>{});
    if constexpr (braces > maxAggregateFields || !braceCountIsFieldCount<T, braces>())
      return -1;
    else if constexpr (braces == 0 && !std::is_empty_v<T>)
      return -1;
    else
      return static_cast<int>(braces);
  }
}

/// Calls f with references to every field of aggregate t (N fields, N >= 1), in declaration order.
template <std::size_t N, class T, class F>
constexpr decltype(auto) visitFields(T& t, F&& f) {
  static_assert(N >= 1 && N <= maxAggregateFields);
  if constexpr (N == 1) {
    auto& [f0] = t;
    return std::forward<F>(f)(f0);
  } else if constexpr (N == 2) {
    auto& [f0, f1] = t;
    return std::forward<F>(f)(f0, f1);
  } else if constexpr (N == 3) {
    auto& [f0, f1, f2] = t;
    return std::forward<F>(f)(f0, f1, f2);
  } else if constexpr (N == 4) {
    auto& [f0, f1, f2, f3] = t;
    return std::forward<F>(f)(f0, f1, f2, f3);
  } else if constexpr (N == 5) {
    auto& [f0, f1, f2, f3, f4] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4);
  } else if constexpr (N == 6) {
    auto& [f0, f1, f2, f3, f4, f5] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5);
  } else if constexpr (N == 7) {
    auto& [f0, f1, f2, f3, f4, f5, f6] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6);
  } else if constexpr (N == 8) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7);
  } else if constexpr (N == 9) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8);
  } else if constexpr (N == 10) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9);
  } else if constexpr (N == 11) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10);
  } else if constexpr (N == 12) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11);
  } else if constexpr (N == 13) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12);
  } else if constexpr (N == 14) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13);
  } else if constexpr (N == 15) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14);
  } else if constexpr (N == 16) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15);
  } else if constexpr (N == 17) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16);
  } else if constexpr (N == 18) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17);
  } else if constexpr (N == 19) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18);
  } else if constexpr (N == 20) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18,
           f19] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19);
  } else if constexpr (N == 21) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20);
  } else if constexpr (N == 22) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21);
  } else if constexpr (N == 23) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22);
  } else if constexpr (N == 24) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23);
  } else if constexpr (N == 25) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24);
  } else if constexpr (N == 26) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25);
  } else if constexpr (N == 27) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26);
  } else if constexpr (N == 28) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27);
  } else if constexpr (N == 29) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27, f28);
  } else if constexpr (N == 30) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27, f28, f29);
  } else if constexpr (N == 31) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29, f30] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27, f28, f29,
                              f30);
  } else if constexpr (N == 32) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29, f30, f31] = t;
    return std::forward<F>(f)(f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
                              f16, f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27, f28, f29,
                              f30, f31);
  }
}

/// TypeList of the declared types of the N fields of T (references and const kept, so that a
/// reference member is seen as one). Only used in unevaluated contexts.
template <std::size_t N, class T>
constexpr auto fieldTypeList(T& t) {
  static_assert(N >= 1 && N <= maxAggregateFields);
  if constexpr (N == 1) {
    auto& [f0] = t;
    return TypeList<decltype(f0)>{};
  } else if constexpr (N == 2) {
    auto& [f0, f1] = t;
    return TypeList<decltype(f0), decltype(f1)>{};
  } else if constexpr (N == 3) {
    auto& [f0, f1, f2] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2)>{};
  } else if constexpr (N == 4) {
    auto& [f0, f1, f2, f3] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3)>{};
  } else if constexpr (N == 5) {
    auto& [f0, f1, f2, f3, f4] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4)>{};
  } else if constexpr (N == 6) {
    auto& [f0, f1, f2, f3, f4, f5] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5)>{};
  } else if constexpr (N == 7) {
    auto& [f0, f1, f2, f3, f4, f5, f6] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6)>{};
  } else if constexpr (N == 8) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7)>{};
  } else if constexpr (N == 9) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8)>{};
  } else if constexpr (N == 10) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9)>{};
  } else if constexpr (N == 11) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10)>{};
  } else if constexpr (N == 12) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11)>{};
  } else if constexpr (N == 13) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12)>{};
  } else if constexpr (N == 14) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13)>{};
  } else if constexpr (N == 15) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14)>{};
  } else if constexpr (N == 16) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15)>{};
  } else if constexpr (N == 17) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16)>{};
  } else if constexpr (N == 18) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17)>{};
  } else if constexpr (N == 19) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18)>{};
  } else if constexpr (N == 20) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18,
           f19] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19)>{};
  } else if constexpr (N == 21) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20)>{};
  } else if constexpr (N == 22) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21)>{};
  } else if constexpr (N == 23) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22)>{};
  } else if constexpr (N == 24) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23)>{};
  } else if constexpr (N == 25) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24)>{};
  } else if constexpr (N == 26) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25)>{};
  } else if constexpr (N == 27) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26)>{};
  } else if constexpr (N == 28) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26), decltype(f27)>{};
  } else if constexpr (N == 29) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26), decltype(f27), decltype(f28)>{};
  } else if constexpr (N == 30) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26), decltype(f27), decltype(f28), decltype(f29)>{};
  } else if constexpr (N == 31) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29, f30] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26), decltype(f27), decltype(f28), decltype(f29),
                    decltype(f30)>{};
  } else if constexpr (N == 32) {
    auto& [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19,
           f20, f21, f22, f23, f24, f25, f26, f27, f28, f29, f30, f31] = t;
    return TypeList<decltype(f0), decltype(f1), decltype(f2), decltype(f3), decltype(f4),
                    decltype(f5), decltype(f6), decltype(f7), decltype(f8), decltype(f9),
                    decltype(f10), decltype(f11), decltype(f12), decltype(f13), decltype(f14),
                    decltype(f15), decltype(f16), decltype(f17), decltype(f18), decltype(f19),
                    decltype(f20), decltype(f21), decltype(f22), decltype(f23), decltype(f24),
                    decltype(f25), decltype(f26), decltype(f27), decltype(f28), decltype(f29),
                    decltype(f30), decltype(f31)>{};
  }
}

template <class T, int N = aggregateFieldCount<T>()>
struct FieldTypesOf {
  using type = decltype(fieldTypeList<static_cast<std::size_t>(N)>(std::declval<T&>()));
};
template <class T>
struct FieldTypesOf<T, 0> {
  using type = TypeList<>;
};

/// The declared types of aggregate T's fields; T must have aggregateFieldCount<T>() >= 0.
template <class T>
using FieldTypes = typename FieldTypesOf<T>::type;

} // namespace flockmp::detail
