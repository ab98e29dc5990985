// flock internals: calling the user's callable on one input, unpacking tuple-like inputs when
// the callable takes their elements (the seed's instance-method example passes pairs).
#pragma once

#include <concepts>
#include <cstddef>
#include <functional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

namespace flockmp::detail {

template <class T>
concept TupleLike = requires { std::tuple_size<std::remove_cvref_t<T>>::value; };

template <class F, class T, std::size_t... I>
constexpr bool applicableImpl(std::index_sequence<I...>) {
  return std::is_invocable_v<F, decltype(std::get<I>(std::declval<T>()))...>;
}

/// F can be called with the elements of the tuple-like T.
template <class F, class T>
concept Applicable =
    TupleLike<T> &&
    applicableImpl<F, T>(std::make_index_sequence<std::tuple_size_v<std::remove_cvref_t<T>>>{});

/// F can take an input of type T, whole or unpacked.
template <class F, class T>
concept CallableOn = std::is_invocable_v<F&, T> || Applicable<F&, T>;

/// Call f with the input; a tuple-like input is unpacked only when f cannot take it whole.
template <class F, class T>
  requires CallableOn<F, T>
constexpr decltype(auto) invokeOn(F& f, T&& x) {
  if constexpr (std::is_invocable_v<F&, T>) return std::invoke(f, std::forward<T>(x));
  else return std::apply(f, std::forward<T>(x));
}

/// The callable's result type for inputs of T, as stored (references decay to values).
template <class F, class T>
using ResultOf = std::remove_cvref_t<decltype(invokeOn(std::declval<F&>(), std::declval<T>()))>;

} // namespace flockmp::detail
