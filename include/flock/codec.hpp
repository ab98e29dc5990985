// flock: the codec. Turns a value into bytes in one process and back into an equal value in
// another process running the same binary on the same machine.
//
//   std::vector<std::byte> bytes = flockmp::encode(value);          // or BinaryCodec::encode
//   auto back = flockmp::decode<decltype(value)>(bytes);             // throws flockmp::CodecError
//
// What the built-in BinaryCodec carries, with no user code:
//   - arithmetic types (bool, char types, integers, floating point), enums, std::byte;
//   - std::basic_string of a character type; std::vector (vector<bool> too), std::array,
//     std::deque, std::list, std::forward_list; std::map, std::multimap, std::set,
//     std::multiset and their unordered versions; std::pair, std::tuple, std::optional,
//     std::variant; empty class types such as std::monostate (0 bytes); std::filesystem::path
//     (as its native string);
//   - aggregates (plain structs), field by field through structured bindings (up to 32 fields;
//     no base classes, C array or anonymous union members), so a struct holding a std::string
//     works; an aggregate whose fields are all raw (see BinaryCodec::isRaw) is copied whole;
//   - other trivially copyable class types (std::chrono::duration, time_point, std::complex, an
//     aggregate with a C array...), copied as their object bytes. The codec cannot see the
//     private members of such a type: one holding a pointer (say, a lambda that captures by
//     reference) is copied as an address. Give such a type a hook, or keep it out of the codec;
//   - any type with a serialize hook or a flockmp::Serializer specialization (see below).
// Not carried, by design: raw pointers, references, member and function pointers,
// std::string_view, std::span, ranges views, iterators, std::reference_wrapper, smart pointers
// (their value is an address in the sender's memory), and class types with no rule and no hook
// (std::thread, std::function, std::mutex...). Using one is a compile-time error that names the
// type and the fix.
//
// A user hook always beats the built-in rules. The same hook serves encoding and decoding: the
// archive writes the fields when encoding and reads into them when decoding (after the value was
// default constructed, so a hooked type must be default constructible):
//
//   struct Point {
//     double x = 0, y = 0;
//     template <class Ar> void serialize(Ar& ar) { ar(x, y); }                   // member hook
//   };
//   namespace geo {
//   struct Shape { int id = 0; std::vector<Point> points; };
//   template <class Ar> void serialize(Ar& ar, Shape& s) { ar(s.id, s.points); } // ADL hook
//   }
//
// `Ar::isEncoding` / `Ar::isDecoding` tell the hook which way it runs. When encoding, the hook is
// called on a value the codec holds by const reference: it must only hand fields to the archive,
// never modify them. A private member hook works when the class befriends flockmp::CodecAccess.
// A hooked type is trusted to exist as soon as its hook does; the fields it hands to the archive
// are checked (with the same readable error) when the hook is compiled.
//
// For a type you cannot modify, or that is not default constructible, specialize
// flockmp::Serializer<T> (see there).
//
// The encoding is for a pipe between processes of one build: native endianness, native sizes,
// no versioning. Lengths and counts are 64-bit, a variant index is one byte (four past 255
// alternatives), an optional's flag and a vector<bool> element are one byte each. Raw values are
// copied with their padding bytes, so equal values may encode to different bytes.
// Decoding never trusts its input: truncated or corrupt bytes (a count the remaining bytes
// cannot hold, a bool, optional flag or variant index out of range, trailing bytes) raise
// flockmp::CodecError naming the type; they never crash and never make the decoder allocate far
// more than the input could justify. Elements that encode to no bytes at all (std::monostate,
// std::tuple<>, empty structs) are limited to 32 MiB worth of them per ByteReader.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <forward_list>
#include <functional>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

#include "detail/codec_fields.hpp"
#include "detail/type_name.hpp"
#include "error.hpp"

namespace flockmp {

namespace detail {
struct ReaderAccess;
/// Memory (in bytes) that the elements which encode to nothing may take in the values one
/// ByteReader decodes. Such elements cost no input, so without this cap a corrupt count, or
/// nested containers of them, could make a small input decode into gigabytes.
inline constexpr std::size_t emptyElementBudget = std::size_t{32} << 20;

// The codec's error messages are built out of line (in flock::engine when it is linked): every
// type a program encodes or decodes would otherwise compile fmt's formatting for paths that
// rarely run. `type` names the value being decoded, or is empty for the reader's own errors.

/// "truncated input: needed N more bytes, M left".
FLOCK_ENGINE_INLINE CodecError truncatedInput(std::string_view type, std::size_t needed, std::size_t left);
/// "N unexpected trailing bytes after the value".
FLOCK_ENGINE_INLINE CodecError trailingBytes(std::string_view type, std::size_t left);
/// "invalid bool byte 0x02", or "invalid `T` flag byte 0x02" when `flagOf` names a type.
FLOCK_ENGINE_INLINE CodecError badFlagByte(std::string_view flagOf, unsigned byte, bool prefixed);
/// A decode of `type` that failed for `cause` (a message from a nested value).
FLOCK_ENGINE_INLINE CodecError decodeFailed(std::string_view type, std::string_view cause);
/// An element count that the bytes left cannot hold.
FLOCK_ENGINE_INLINE CodecError countTooLarge(std::string_view type, std::uint64_t count, std::size_t left);
/// More elements that encode to nothing than emptyElementBudget allows.
FLOCK_ENGINE_INLINE CodecError tooManyEmptyElements(std::string_view type);
/// A std::variant that is valueless_by_exception.
FLOCK_ENGINE_INLINE CodecError valuelessVariant(std::string_view type);
/// An alternative index out of a std::variant's range.
FLOCK_ENGINE_INLINE CodecError badAlternative(std::string_view type, std::size_t index, std::size_t count);
} // namespace detail

/// Appends bytes to a buffer owned by the caller, who may reuse it across values (clear() it
/// first): nothing is allocated beyond the buffer's growth.
class ByteWriter {
public:
  explicit ByteWriter(std::vector<std::byte>& out) noexcept : out_(&out) {}

  /// Appends n bytes read from data.
  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    const auto* p = static_cast<const std::byte*>(data);
    out_->insert(out_->end(), p, p + n);
  }

  /// Appends the object bytes of a trivially copyable value.
  template <class T>
  void writeRaw(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>,
                  "flockmp::ByteWriter::writeRaw needs a trivially copyable type");
    write(std::addressof(v), sizeof(T));
  }

  /// The buffer written to.
  [[nodiscard]] std::vector<std::byte>& buffer() noexcept { return *out_; }

  /// Bytes in the buffer (including any that were there before this writer).
  [[nodiscard]] std::size_t size() const noexcept { return out_->size(); }

private:
  std::vector<std::byte>* out_;
};

/// Reads from a span of bytes it does not own. Every read is bounds checked: reading past the end
/// throws flockmp::CodecError, it is never undefined behaviour.
class ByteReader {
public:
  ByteReader(const std::byte* data, std::size_t n) noexcept : pos_(data), end_(data + n) {}
  explicit ByteReader(std::span<const std::byte> s) noexcept : ByteReader(s.data(), s.size()) {}

  /// Copies the next n bytes to dst; throws flockmp::CodecError when fewer than n remain.
  void read(void* dst, std::size_t n) {
    if (n > remaining()) throw detail::truncatedInput({}, n, remaining());
    if (n != 0) std::memcpy(dst, pos_, n);
    pos_ += n;
  }

  /// Reads a trivially copyable value from its object bytes. A bool must be 0 or 1.
  template <class T>
  T readRaw() {
    static_assert(std::is_trivially_copyable_v<T>,
                  "flockmp::ByteReader::readRaw needs a trivially copyable type");
    if constexpr (std::is_same_v<T, bool>) {
      unsigned char byte = 0;
      read(&byte, 1);
      if (byte > 1) throw detail::badFlagByte({}, byte, true);
      return byte == 1;
    } else if constexpr (std::is_default_constructible_v<T> && std::is_copy_assignable_v<T>) {
      T v;
      read(std::addressof(v), sizeof(T));
      return v;
    } else {
      // No default constructor (or const members): build the value from its bytes instead.
      std::array<std::byte, sizeof(T)> bytes;
      read(bytes.data(), sizeof(T));
      return std::bit_cast<T>(bytes);
    }
  }

  /// The next n bytes in place (valid while the underlying buffer is); throws
  /// flockmp::CodecError when fewer than n remain.
  const std::byte* take(std::size_t n) {
    if (n > remaining()) throw detail::truncatedInput({}, n, remaining());
    const std::byte* p = pos_;
    pos_ += n;
    return p;
  }

  /// Bytes not read yet.
  [[nodiscard]] std::size_t remaining() const noexcept {
    return static_cast<std::size_t>(end_ - pos_);
  }

  /// The next byte to be read.
  [[nodiscard]] const std::byte* position() const noexcept { return pos_; }

  /// Throws flockmp::CodecError when bytes remain: a decoded value must use its whole input.
  void expectEnd() const {
    if (remaining() != 0) throw detail::trailingBytes({}, remaining());
  }

private:
  friend struct detail::ReaderAccess;
  const std::byte* pos_;
  const std::byte* end_;
  std::size_t emptyBudget_ = detail::emptyElementBudget;
};

/// Customization point for a type you cannot modify, or that is not default constructible; it
/// beats every built-in rule and the serialize hooks. Specialize it with both functions:
///
///   template <> struct flockmp::Serializer<Money> {
///     static void encode(flockmp::ByteWriter& w, const Money& m) {
///       flockmp::BinaryCodec::encode(w, m.cents());
///     }
///     static Money decode(flockmp::ByteReader& r) {
///       return Money::fromCents(flockmp::BinaryCodec::decode<std::int64_t>(r));
///     }
///   };
///
/// decode must throw flockmp::CodecError on bad input (BinaryCodec::decode already does).
template <class T>
struct Serializer {
  /// Marks the primary template: a specialization must not declare it.
  using NotSpecialized = void;
};

/// Befriend this class to keep a member serialize hook private:
/// `friend struct flockmp::CodecAccess;`.
struct CodecAccess {
  template <class T, class Ar>
  static constexpr bool hasMemberHook = requires(T& v, Ar& ar) {
    v.serialize(ar);
  };

  template <class T, class Ar>
  static void serialize(T& v, Ar& ar) {
    v.serialize(ar);
  }
};

namespace detail {

template <class T>
inline constexpr bool dependentFalse = false;

namespace archive {

// The archives live in a namespace of their own, with no function named `serialize`, because ADL
// looks into an archive's namespace when finding a user's free serialize hook.

/// What a serialize hook receives when its value is encoded: `ar(fields...)` writes them.
class Encoder {
public:
  static constexpr bool isEncoding = true;
  static constexpr bool isDecoding = false;
  explicit Encoder(ByteWriter& w) noexcept : w_(&w) {}
  template <class... Fields>
  void operator()(const Fields&... fields);

private:
  ByteWriter* w_;
};

/// What a serialize hook receives when its value is decoded: `ar(fields...)` reads into them.
class Decoder {
public:
  static constexpr bool isEncoding = false;
  static constexpr bool isDecoding = true;
  explicit Decoder(ByteReader& r) noexcept : r_(&r) {}
  template <class... Fields>
  void operator()(Fields&... fields);

private:
  ByteReader* r_;
};

} // namespace archive

namespace hookLookup {
// Poison pill: unqualified lookup stops here, so only ADL (the user's namespace) can supply the
// free serialize hook, never an unrelated `serialize` in an enclosing namespace.
void serialize() = delete;

template <class T>
concept HasAdlHook = requires(T& v, archive::Encoder& e, archive::Decoder& d) {
  serialize(e, v);
  serialize(d, v);
};

template <class Ar, class T>
void callAdlHook(Ar& ar, T& v) {
  serialize(ar, v);
}
} // namespace hookLookup

template <class T>
concept HasMemberHook = CodecAccess::hasMemberHook<T, archive::Encoder> &&
    CodecAccess::hasMemberHook<T, archive::Decoder>;

template <class T>
concept HasSerializerSpecialization = !requires {
  typename Serializer<T>::NotSpecialized;
};

template <class T>
concept HasValidSerializer = requires(ByteWriter& w, ByteReader& r, const T& v) {
  Serializer<T>::encode(w, v);
  { Serializer<T>::decode(r) } -> std::same_as<T>;
};

/// How the codec carries a type. The order of ruleOf's tests is the priority of the rules.
enum class Rule {
  unsupported,   // no rule, no hook
  pointerLike,   // an address into the sender's memory: never carried
  badSerializer, // flockmp::Serializer<T> is specialized without encode/decode of the right shape
  serializer,    // flockmp::Serializer<T>
  memberHook,    // t.serialize(ar)
  adlHook,       // serialize(ar, t)
  raw,           // arithmetic, enum: object bytes
  string,        // count + characters
  vectorBool,    // count + one byte (0 or 1) per element
  vector,        // count + elements (one block when the elements are raw)
  stdArray,      // elements (one block when raw)
  sequence,      // deque, list: count + elements
  forwardList,   // count + elements
  map,           // count + (key, value) pairs
  set,           // count + keys
  pair,          // first, second
  tuple,         // elements
  optional,      // 0, or 1 + value
  variant,       // index + alternative
  empty,         // empty class: nothing
  aggregate,     // fields (object bytes when all fields are raw)
  trivial,       // other trivially copyable class: object bytes
};

template <class Ch>
inline constexpr bool isCharType =
    std::is_same_v<Ch, char> || std::is_same_v<Ch, signed char> ||
    std::is_same_v<Ch, unsigned char> || std::is_same_v<Ch, wchar_t> ||
    std::is_same_v<Ch, char8_t> || std::is_same_v<Ch, char16_t> || std::is_same_v<Ch, char32_t>;

/// The built-in rule for standard library templates, and the types they are made of.
template <class T>
struct StdRule {
  static constexpr Rule rule = Rule::unsupported;
  using Components = TypeList<>;
};
template <class Ch, class Tr, class A>
struct StdRule<std::basic_string<Ch, Tr, A>> {
  static constexpr Rule rule = isCharType<Ch> ? Rule::string : Rule::unsupported;
  using Components = TypeList<>;
};
template <class A>
struct StdRule<std::vector<bool, A>> {
  static constexpr Rule rule = Rule::vectorBool;
  using Components = TypeList<>;
};
template <class E, class A>
struct StdRule<std::vector<E, A>> {
  static constexpr Rule rule = Rule::vector;
  using Components = TypeList<E>;
};
template <class E, std::size_t N>
struct StdRule<std::array<E, N>> {
  static constexpr Rule rule = Rule::stdArray;
  using Components = TypeList<E>;
};
template <class E, class A>
struct StdRule<std::deque<E, A>> {
  static constexpr Rule rule = Rule::sequence;
  using Components = TypeList<E>;
};
template <class E, class A>
struct StdRule<std::list<E, A>> {
  static constexpr Rule rule = Rule::sequence;
  using Components = TypeList<E>;
};
template <class E, class A>
struct StdRule<std::forward_list<E, A>> {
  static constexpr Rule rule = Rule::forwardList;
  using Components = TypeList<E>;
};
template <class K, class V, class C, class A>
struct StdRule<std::map<K, V, C, A>> {
  static constexpr Rule rule = Rule::map;
  using Components = TypeList<K, V>;
};
template <class K, class V, class C, class A>
struct StdRule<std::multimap<K, V, C, A>> {
  static constexpr Rule rule = Rule::map;
  using Components = TypeList<K, V>;
};
template <class K, class V, class H, class E, class A>
struct StdRule<std::unordered_map<K, V, H, E, A>> {
  static constexpr Rule rule = Rule::map;
  using Components = TypeList<K, V>;
};
template <class K, class V, class H, class E, class A>
struct StdRule<std::unordered_multimap<K, V, H, E, A>> {
  static constexpr Rule rule = Rule::map;
  using Components = TypeList<K, V>;
};
template <class K, class C, class A>
struct StdRule<std::set<K, C, A>> {
  static constexpr Rule rule = Rule::set;
  using Components = TypeList<K>;
};
template <class K, class C, class A>
struct StdRule<std::multiset<K, C, A>> {
  static constexpr Rule rule = Rule::set;
  using Components = TypeList<K>;
};
template <class K, class H, class E, class A>
struct StdRule<std::unordered_set<K, H, E, A>> {
  static constexpr Rule rule = Rule::set;
  using Components = TypeList<K>;
};
template <class K, class H, class E, class A>
struct StdRule<std::unordered_multiset<K, H, E, A>> {
  static constexpr Rule rule = Rule::set;
  using Components = TypeList<K>;
};
template <class A, class B>
struct StdRule<std::pair<A, B>> {
  static constexpr Rule rule = Rule::pair;
  using Components = TypeList<A, B>;
};
template <class... Ts>
struct StdRule<std::tuple<Ts...>> {
  static constexpr Rule rule = Rule::tuple;
  using Components = TypeList<Ts...>;
};
template <class E>
struct StdRule<std::optional<E>> {
  static constexpr Rule rule = Rule::optional;
  using Components = TypeList<E>;
};
template <class... Ts>
struct StdRule<std::variant<Ts...>> {
  static constexpr Rule rule = sizeof...(Ts) > 0 ? Rule::variant : Rule::unsupported;
  using Components = TypeList<Ts...>;
};

/// Types whose value is an address in the sender's memory (or a view of it).
template <class T>
struct IsPointerLike : std::bool_constant<std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                                          std::is_null_pointer_v<T> || std::is_reference_v<T>> {};
template <class Ch, class Tr>
struct IsPointerLike<std::basic_string_view<Ch, Tr>> : std::true_type {};
template <class E, std::size_t N>
struct IsPointerLike<std::span<E, N>> : std::true_type {};
template <class E>
struct IsPointerLike<std::reference_wrapper<E>> : std::true_type {};
template <class E, class D>
struct IsPointerLike<std::unique_ptr<E, D>> : std::true_type {};
template <class E>
struct IsPointerLike<std::shared_ptr<E>> : std::true_type {};
template <class E>
struct IsPointerLike<std::weak_ptr<E>> : std::true_type {};

/// Iterators and ranges views refer to elements they do not own.
template <class T>
inline constexpr bool isPointerLike =
    IsPointerLike<T>::value || std::input_or_output_iterator<T> || std::ranges::view<T>;

/// The rule that carries T (cv-unqualified, not a reference).
template <class T>
consteval Rule ruleOf() {
  if constexpr (std::is_reference_v<T> || std::is_function_v<T> || std::is_void_v<T>)
    return IsPointerLike<T>::value ? Rule::pointerLike : Rule::unsupported;
  else if constexpr (HasSerializerSpecialization<T>)
    return HasValidSerializer<T> ? Rule::serializer : Rule::badSerializer;
  else if constexpr (HasMemberHook<T>)
    return Rule::memberHook;
  else if constexpr (hookLookup::HasAdlHook<T>)
    return Rule::adlHook;
  else if constexpr (isPointerLike<T>)
    return Rule::pointerLike;
  else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>)
    return Rule::raw;
  else if constexpr (StdRule<T>::rule != Rule::unsupported)
    return StdRule<T>::rule;
  else if constexpr (std::is_class_v<T> && std::is_empty_v<T> && std::is_default_constructible_v<T>)
    return Rule::empty;
  else if constexpr (std::is_class_v<T> && aggregateFieldCount<T>() >= 0)
    return Rule::aggregate;
  else if constexpr ((std::is_class_v<T> || std::is_union_v<T>)&&std::is_trivially_copyable_v<T>)
    return Rule::trivial;
  else
    return Rule::unsupported;
}

/// The types a value of T is made of, as far as the codec recurses into them.
template <class T, Rule R = ruleOf<T>()>
struct ComponentsOf {
  using type = TypeList<>;
};
template <class T, Rule R>
requires(R == Rule::vector || R == Rule::stdArray || R == Rule::sequence ||
         R == Rule::forwardList || R == Rule::map || R == Rule::set || R == Rule::pair ||
         R == Rule::tuple || R == Rule::optional || R == Rule::variant) struct ComponentsOf<T, R> {
  using type = typename StdRule<T>::Components;
};
template <class T>
struct ComponentsOf<T, Rule::aggregate> {
  using type = FieldTypes<T>;
};

template <class T, class... Seen>
consteval bool contains(TypeList<Seen...> /*unused*/) {
  return (std::is_same_v<T, Seen> || ...);
}

template <class T, class Seen>
struct Prepend;
template <class T, class... Seen>
struct Prepend<T, TypeList<Seen...>> {
  using type = TypeList<T, Seen...>;
};

template <class T, class Seen>
consteval bool isSerializableIn();

template <class Seen, class... Ts>
consteval bool allSerializableIn(TypeList<Ts...> /*unused*/) {
  return (isSerializableIn<Ts, Seen>() && ...);
}

/// Whether BinaryCodec can carry T, components included, given that the types in Seen (the
/// enclosing types being checked) can. Assuming that of an enclosing type lets a recursive type
/// (struct Node { int v; std::vector<Node> kids; }) be checked without endless recursion.
template <class T, class Seen>
consteval bool isSerializableIn() {
  if constexpr (std::is_array_v<T>) {
    return false; // a C array is neither returned nor assigned; use std::array
  } else if constexpr (contains<std::remove_cv_t<T>>(Seen{})) {
    return true;
  } else {
    using U = std::remove_cv_t<T>;
    using Inner = typename Prepend<U, Seen>::type;
    constexpr Rule rule = ruleOf<U>();
    if constexpr (rule == Rule::unsupported || rule == Rule::pointerLike ||
                  rule == Rule::badSerializer)
      return false;
    else if constexpr (rule == Rule::memberHook || rule == Rule::adlHook)
      return std::is_default_constructible_v<U>; // decode constructs, then reads into it
    else if constexpr (rule == Rule::serializer || rule == Rule::raw || rule == Rule::string ||
                       rule == Rule::empty || rule == Rule::trivial)
      return true;
    else if constexpr (rule == Rule::vectorBool || rule == Rule::vector || rule == Rule::sequence ||
                       rule == Rule::forwardList || rule == Rule::map || rule == Rule::set)
      return std::is_default_constructible_v<U> &&
             allSerializableIn<Inner>(typename ComponentsOf<U>::type{});
    else
      return allSerializableIn<Inner>(typename ComponentsOf<U>::type{});
  }
}

/// Whether BinaryCodec can carry T, components included (the Serializable concept).
template <class T>
consteval bool isSerializable() {
  return isSerializableIn<T, TypeList<>>();
}

template <class T>
consteval bool isRaw();

/// Whether T's encoding is exactly its sizeof(T) object bytes (BinaryCodec::isRaw).
template <class T>
consteval bool isRaw() {
  if constexpr (std::is_const_v<T> || std::is_volatile_v<T> || std::is_reference_v<T> ||
                std::is_array_v<T>) {
    // A const field is fine inside a raw aggregate; that case goes through allRawFields. (No
    // isSerializable check here: isRaw is structural, never recurses into containers, and is
    // true only for types that are serializable.)
    return false;
  } else {
    constexpr Rule rule = ruleOf<T>();
    if constexpr (rule == Rule::raw || rule == Rule::trivial)
      return true;
    else if constexpr (rule == Rule::stdArray)
      return isRaw<typename T::value_type>();
    else if constexpr (rule == Rule::aggregate)
      return std::is_trivially_copyable_v<T> && allRawFields(FieldTypes<T>{});
    else
      return false;
  }
}

template <class... Fs>
consteval bool allRawFields(TypeList<Fs...> /*unused*/) {
  return (isRaw<std::remove_cv_t<Fs>>() && ...);
}

/// Whether a raw T holds a bool that decoding must check (a bool byte other than 0/1 is UB).
template <class T>
consteval bool hasBool() {
  if constexpr (std::is_same_v<T, bool>)
    return true;
  else if constexpr (ruleOf<T>() == Rule::stdArray)
    return hasBool<std::remove_cv_t<typename T::value_type>>();
  else if constexpr (ruleOf<T>() == Rule::aggregate)
    return []<class... Fs>(TypeList<Fs...>) {
      return (hasBool<std::remove_cv_t<Fs>>() || ...);
    }(FieldTypes<T>{});
  else
    return false;
}

template <class T>
consteval std::size_t minEncodedSize();

template <class... Ts>
consteval std::size_t sumMinEncodedSize(TypeList<Ts...> /*unused*/) {
  return (std::size_t{0} + ... + minEncodedSize<std::remove_cv_t<Ts>>());
}

template <class... Ts>
consteval std::size_t leastMinEncodedSize(TypeList<Ts...> /*unused*/) {
  return std::min({minEncodedSize<std::remove_cv_t<Ts>>()...});
}

/// Variant index width: one byte is enough for any variant anyone writes.
template <class V>
using VariantIndex =
    std::conditional_t<(std::variant_size_v<V> <= 255), std::uint8_t, std::uint32_t>;

/// A lower bound on the encoded size of any T: how a decoder knows that a count cannot be right
/// before it allocates or loops. 0 for types that may encode to nothing (and for hooks).
template <class T>
consteval std::size_t minEncodedSize() {
  constexpr Rule rule = ruleOf<T>();
  if constexpr (isRaw<T>())
    return sizeof(T);
  else if constexpr (rule == Rule::string || rule == Rule::vectorBool || rule == Rule::vector ||
                     rule == Rule::sequence || rule == Rule::forwardList || rule == Rule::map ||
                     rule == Rule::set)
    return sizeof(std::uint64_t);
  else if constexpr (rule == Rule::stdArray)
    return std::tuple_size_v<T> * minEncodedSize<std::remove_cv_t<typename T::value_type>>();
  else if constexpr (rule == Rule::pair || rule == Rule::tuple || rule == Rule::aggregate)
    return sumMinEncodedSize(typename ComponentsOf<T>::type{});
  else if constexpr (rule == Rule::optional)
    return 1;
  else if constexpr (rule == Rule::variant)
    return sizeof(VariantIndex<T>) + leastMinEncodedSize(typename ComponentsOf<T>::type{});
  else
    return 0;
}

/// What one element that encodes to nothing costs the reader's emptyElementBudget (its size plus
/// a container node's overhead).
template <class E>
inline constexpr std::size_t emptyElementCost = sizeof(E) + 2 * sizeof(void*);

/// Why T cannot be carried, for the compile-time message.
enum class Reason {
  noRule,
  pointer,
  hookNeedsDefaultConstructor,
  badSerializer,
  undecomposableAggregate
};

/// The innermost type that makes T not serializable: for std::vector<int*>, int*. Seen: the
/// enclosing types, as in isSerializableIn.
template <class T, class Seen = TypeList<>>
consteval auto culpritOf();

template <class Seen>
consteval std::type_identity<void> firstCulprit(TypeList<> /*unused*/) {
  return {};
}

template <class Seen, class Head, class... Tail>
consteval auto firstCulprit(TypeList<Head, Tail...> /*unused*/) {
  if constexpr (!isSerializableIn<Head, Seen>())
    return culpritOf<Head, Seen>();
  else
    return firstCulprit<Seen>(TypeList<Tail...>{});
}

template <class T, class Seen>
consteval auto culpritOf() {
  if constexpr (std::is_array_v<T> || std::is_reference_v<T>) {
    return std::type_identity<T>{};
  } else {
    using U = std::remove_cv_t<T>;
    using Inner = typename decltype(firstCulprit<typename Prepend<U, Seen>::type>(
        typename ComponentsOf<U>::type{}))::type;
    if constexpr (std::is_void_v<Inner>)
      return std::type_identity<U>{};
    else
      return std::type_identity<Inner>{};
  }
}

/// The culprit of a type that is not serializable (see culpritOf).
template <class T>
using Culprit = typename decltype(culpritOf<T>())::type;

/// Why the culprit C cannot be carried.
template <class C>
consteval Reason reasonOf() {
  if constexpr (std::is_array_v<C>) {
    return Reason::noRule;
  } else {
    constexpr Rule rule = ruleOf<std::remove_cv_t<C>>();
    if constexpr (rule == Rule::pointerLike)
      return Reason::pointer;
    else if constexpr (rule == Rule::memberHook || rule == Rule::adlHook)
      return Reason::hookNeedsDefaultConstructor;
    else if constexpr (rule == Rule::badSerializer)
      return Reason::badSerializer;
    else if constexpr (rule == Rule::unsupported && std::is_aggregate_v<std::remove_cv_t<C>>)
      return Reason::undecomposableAggregate;
    else
      return Reason::noRule;
  }
}

// The compile-time messages. Each is a class template named after the problem, instantiated with
// the offending type, so that g++ prints e.g. `PointerCannotCrossProcesses<int*>` next to the
// message; the "required from" lines below it name the type that was being sent.

template <class T>
struct TypeCannotCrossProcesses {
  static_assert(dependentFalse<T>,
                "flock: this type cannot be carried between processes by the codec (no built-in "
                "rule, no hook). Fix: give it a serialize hook (template <class Ar> void "
                "serialize(Ar& ar) { ar(field1, field2); }), specialize flockmp::Serializer<T>, "
                "or use a supported type (see flock/codec.hpp).");
};

template <class T>
struct PointerCannotCrossProcesses {
  static_assert(dependentFalse<T>,
                "flock: this type points into the sender's memory (a pointer, reference, "
                "string_view, span, view, iterator, reference_wrapper or smart pointer); the "
                "address means nothing in another process. Fix: send the value itself "
                "(std::string for a string_view, std::vector<T> for a span or a view, T for a "
                "pointer to T).");
};

template <class T>
struct HookedTypeNeedsDefaultConstructor {
  static_assert(
      dependentFalse<T>,
      "flock: this type has a serialize hook but no default constructor; decoding "
      "constructs the value first, then the hook reads into its fields. Fix: add a "
      "default constructor, or specialize flockmp::Serializer<T> with static void "
      "encode(flockmp::ByteWriter&, const T&) and static T decode(flockmp::ByteReader&).");
};

template <class T>
struct SerializerSpecializationIsIncomplete {
  static_assert(dependentFalse<T>,
                "flock: flockmp::Serializer<T> is specialized but does not provide both static "
                "void encode(flockmp::ByteWriter&, const T&) and static T "
                "decode(flockmp::ByteReader&).");
};

template <class T>
struct AggregateCannotBeDecomposed {
  static_assert(dependentFalse<T>,
                "flock: this aggregate cannot be carried field by field (it has a base class, a C "
                "array or anonymous union member, or more than 32 fields) and is not trivially "
                "copyable. Fix: give it a serialize hook (template <class Ar> void serialize(Ar& "
                "ar) { ar(field1, field2); }), or use std::array instead of a C array.");
};

template <class C, class T>
struct CodecCannotCarryType {
  static_assert(dependentFalse<T>,
                "flock: the chosen codec C cannot carry this type T (CodecFor<C, T> is false).");
};

/// Instantiates the one message that explains why BinaryCodec cannot carry T.
template <class T>
constexpr void reportNotSerializable() {
  using C = Culprit<T>;
  constexpr Reason reason = reasonOf<C>();
  if constexpr (reason == Reason::pointer)
    static_cast<void>(sizeof(PointerCannotCrossProcesses<C>));
  else if constexpr (reason == Reason::hookNeedsDefaultConstructor)
    static_cast<void>(sizeof(HookedTypeNeedsDefaultConstructor<C>));
  else if constexpr (reason == Reason::badSerializer)
    static_cast<void>(sizeof(SerializerSpecializationIsIncomplete<C>));
  else if constexpr (reason == Reason::undecomposableAggregate)
    static_cast<void>(sizeof(AggregateCannotBeDecomposed<C>));
  else
    static_cast<void>(sizeof(TypeCannotCrossProcesses<C>));
}

template <class T>
void encodeValue(ByteWriter& w, const T& v);

template <class T>
T decodeValue(ByteReader& r);

} // namespace detail

/// BinaryCodec can carry T, and every type T is made of (`std::vector<int*>` is not
/// serializable). A type with a hook counts as serializable as soon as the hook exists; the fields
/// it hands to the archive are checked when the hook is instantiated.
template <class T>
concept Serializable = detail::isSerializable<T>();

/// The built-in binary codec: native endianness and sizes, no versioning (both ends run the same
/// binary on the same machine). See the top of this header for what it carries.
struct BinaryCodec {
  /// Appends the encoding of v.
  template <class T>
  requires Serializable<T>
  static void encode(ByteWriter& w, const T& v) { detail::encodeValue<T>(w, v); }

  /// Reads one T; throws flockmp::CodecError, naming T, when the bytes are truncated or corrupt.
  template <class T>
  requires Serializable<T>
  static T decode(ByteReader& r) {
    if constexpr (isRaw<T> && !detail::hasBool<T>()) {
      // The hot path (a result of a primitive type): no try block needed to name the type.
      if (r.remaining() < sizeof(T)) throw detail::truncatedInput(detail::typeName<T>(), sizeof(T), r.remaining());
      return r.readRaw<T>();
    } else {
      try {
        return detail::decodeValue<T>(r);
      } catch (const CodecError& e) {
        throw detail::decodeFailed(detail::typeName<T>(), e.what());
      }
    }
  }

  /// True when T's encoding is exactly its object representation (sizeof(T) bytes, as memcpy
  /// copies them): arithmetic types, enums, trivially copyable class types with no hook and no
  /// visible pointer member, aggregates whose fields are all raw, std::array of raw elements.
  /// A vector of raw elements is encoded as one block.
  template <class T>
  static constexpr bool isRaw = detail::isRaw<T>();
};

/// Codec C can carry T: `C::encode(writer, value)` and `C::template decode<T>(reader)`.
template <class C, class T>
concept CodecFor = requires(ByteWriter& w, ByteReader& r, const T& v) {
  C::encode(w, v);
  { C::template decode<T>(r) } -> std::same_as<T>;
};

/// Fails to compile, with one message that names T (or the part of T at fault) and the fix, when
/// codec C cannot carry T; does nothing otherwise. Call it where the user passed the type, then
/// guard the code that encodes with `if constexpr (CodecFor<C, T>)` so that only this message
/// is printed.
template <class C, class T>
constexpr void requireCodable() {
  if constexpr (!CodecFor<C, T>) {
    if constexpr (std::is_same_v<C, BinaryCodec>)
      detail::reportNotSerializable<T>();
    else
      static_cast<void>(sizeof(detail::CodecCannotCarryType<C, T>));
  }
}

/// The encoding of v as a new byte vector.
template <class T, class C = BinaryCodec>
std::vector<std::byte> encode(const T& v) {
  requireCodable<C, T>();
  std::vector<std::byte> out;
  if constexpr (CodecFor<C, T>) {
    ByteWriter w{out};
    C::encode(w, v);
  }
  return out;
}

/// Decodes a T that must use all of bytes; throws flockmp::CodecError otherwise, or when the bytes
/// are truncated or corrupt.
template <class T, class C = BinaryCodec>
T decode(std::span<const std::byte> bytes) {
  requireCodable<C, T>();
  if constexpr (CodecFor<C, T>) {
    ByteReader r{bytes};
    T v = C::template decode<T>(r);
    if (r.remaining() != 0) throw detail::trailingBytes(detail::typeName<T>(), r.remaining());
    return v;
  } else {
    std::abort(); // unreachable: requireCodable did not compile
  }
}

namespace detail {

/// Checks the bool bytes of a raw value that was just copied from untrusted input. The bytes are
/// looked at as unsigned char, so a bad bool is never loaded as a bool.
template <class T>
void checkBools(const T& v) {
  if constexpr (std::is_same_v<std::remove_cv_t<T>, bool>) {
    unsigned char byte = 0;
    std::memcpy(&byte, std::addressof(v), 1);
    if (byte > 1) throw badFlagByte({}, byte, false);
  } else if constexpr (!hasBool<std::remove_cv_t<T>>()) {
    // nothing to check
  } else if constexpr (ruleOf<std::remove_cv_t<T>>() == Rule::stdArray) {
    for (const auto& e : v) checkBools(e);
  } else {
    visitFields<static_cast<std::size_t>(aggregateFieldCount<std::remove_cv_t<T>>())>(
        v, [](const auto&... fields) { (checkBools(fields), ...); });
  }
}

template <class T>
T decodeRaw(ByteReader& r) {
  T v = r.readRaw<T>();
  checkBools(v);
  return v;
}

inline void writeCount(ByteWriter& w, std::size_t n) { w.writeRaw(static_cast<std::uint64_t>(n)); }

struct ReaderAccess {
  static std::size_t& emptyBudget(ByteReader& r) noexcept { return r.emptyBudget_; }
};

/// Reads the element count of a Container of Elements and rejects it, before anything is
/// allocated, when the bytes left cannot hold that many elements. Elements that may encode to
/// nothing are bounded by the bytes left plus what the reader's emptyElementBudget still allows.
template <class Container, class Element>
std::size_t readCount(ByteReader& r) {
  const auto n = r.readRaw<std::uint64_t>();
  constexpr std::size_t unit = minEncodedSize<Element>();
  const std::size_t left = r.remaining();
  std::uint64_t limit = 0;
  if constexpr (unit > 0)
    limit = left / unit;
  else
    limit = left + ReaderAccess::emptyBudget(r) / emptyElementCost<Element>;
  if (n > limit) throw countTooLarge(typeName<Container>(), n, left);
  return static_cast<std::size_t>(n);
}

/// Calls decodeOne n times. When Element may encode to nothing, each element that consumed no
/// input is charged to the reader's emptyElementBudget.
template <class Container, class Element, class F>
void decodeElements(ByteReader& r, std::size_t n, F&& decodeOne) {
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (minEncodedSize<Element>() > 0) {
      decodeOne();
    } else {
      const std::size_t before = r.remaining();
      decodeOne();
      if (r.remaining() == before) {
        std::size_t& budget = ReaderAccess::emptyBudget(r);
        if (budget < emptyElementCost<Element>) throw tooManyEmptyElements(typeName<Container>());
        budget -= emptyElementCost<Element>;
      }
    }
  }
}

template <class T, class... Fs>
T decodeFields(ByteReader& r, TypeList<Fs...> /*unused*/) {
  // Braced initialization evaluates its elements left to right: fields come back in order.
  return T{decodeValue<std::remove_cv_t<Fs>>(r)...};
}

template <class V, std::size_t... I>
V decodeVariant(ByteReader& r, std::size_t index, std::index_sequence<I...> /*unused*/) {
  using Decoder = V (*)(ByteReader&);
  static constexpr Decoder decoders[] = {+[](ByteReader& rr) -> V {
    return V(std::in_place_index<I>,
             decodeValue<std::remove_cv_t<std::variant_alternative_t<I, V>>>(rr));
  }...};
  return decoders[index](r);
}

template <class A, std::size_t... I>
A decodeArrayByIndex(ByteReader& r, std::index_sequence<I...> /*unused*/) {
  using E = std::remove_cv_t<typename A::value_type>;
  return A{{(static_cast<void>(I), decodeValue<E>(r))...}};
}

template <class T>
void encodeValue(ByteWriter& w, const T& v) {
  constexpr Rule rule = ruleOf<T>();
  if constexpr (rule == Rule::serializer) {
    Serializer<T>::encode(w, v);
  } else if constexpr (rule == Rule::memberHook) {
    archive::Encoder ar{w};
    CodecAccess::serialize(const_cast<T&>(v), ar); // the encoder only reads the fields
  } else if constexpr (rule == Rule::adlHook) {
    archive::Encoder ar{w};
    hookLookup::callAdlHook(ar, const_cast<T&>(v)); // the encoder only reads the fields
  } else if constexpr (isRaw<T>()) {
    w.write(std::addressof(v), sizeof(T));
  } else if constexpr (rule == Rule::string) {
    writeCount(w, v.size());
    w.write(v.data(), v.size() * sizeof(typename T::value_type));
  } else if constexpr (rule == Rule::vectorBool) {
    writeCount(w, v.size());
    for (bool b : v) w.writeRaw(static_cast<std::uint8_t>(b ? 1 : 0));
  } else if constexpr (rule == Rule::vector) {
    writeCount(w, v.size());
    if constexpr (isRaw<typename T::value_type>())
      w.write(v.data(), v.size() * sizeof(typename T::value_type));
    else
      for (const auto& e : v) encodeValue(w, e);
  } else if constexpr (rule == Rule::stdArray) {
    for (const auto& e : v) encodeValue<std::remove_cv_t<typename T::value_type>>(w, e);
  } else if constexpr (rule == Rule::sequence || rule == Rule::set) {
    writeCount(w, v.size());
    for (const auto& e : v) encodeValue<std::remove_cv_t<typename T::value_type>>(w, e);
  } else if constexpr (rule == Rule::forwardList) {
    writeCount(w, static_cast<std::size_t>(std::distance(v.begin(), v.end())));
    for (const auto& e : v) encodeValue(w, e);
  } else if constexpr (rule == Rule::map) {
    writeCount(w, v.size());
    for (const auto& [key, value] : v) {
      encodeValue<typename T::key_type>(w, key);
      encodeValue<typename T::mapped_type>(w, value);
    }
  } else if constexpr (rule == Rule::pair) {
    encodeValue<std::remove_cv_t<typename T::first_type>>(w, v.first);
    encodeValue<std::remove_cv_t<typename T::second_type>>(w, v.second);
  } else if constexpr (rule == Rule::tuple) {
    std::apply(
        [&](const auto&... es) { (encodeValue<std::remove_cvref_t<decltype(es)>>(w, es), ...); },
        v);
  } else if constexpr (rule == Rule::optional) {
    w.writeRaw(static_cast<std::uint8_t>(v.has_value() ? 1 : 0));
    if (v) encodeValue<std::remove_cv_t<typename T::value_type>>(w, *v);
  } else if constexpr (rule == Rule::variant) {
    if (v.valueless_by_exception()) throw valuelessVariant(typeName<T>());
    w.writeRaw(static_cast<VariantIndex<T>>(v.index()));
    std::visit([&](const auto& alt) { encodeValue<std::remove_cvref_t<decltype(alt)>>(w, alt); },
               v);
  } else if constexpr (rule == Rule::empty) {
    // nothing to write: an empty type has one value
  } else if constexpr (rule == Rule::aggregate) {
    constexpr int n = aggregateFieldCount<T>();
    if constexpr (n > 0)
      visitFields<static_cast<std::size_t>(n)>(v, [&](const auto&... fields) {
        (encodeValue<std::remove_cvref_t<decltype(fields)>>(w, fields), ...);
      });
  } else {
    static_assert(dependentFalse<T>, "flock internal: no encode rule");
  }
}

template <class T>
T decodeValue(ByteReader& r) {
  constexpr Rule rule = ruleOf<T>();
  if constexpr (rule == Rule::serializer) {
    return Serializer<T>::decode(r);
  } else if constexpr (rule == Rule::memberHook) {
    T v{};
    archive::Decoder ar{r};
    CodecAccess::serialize(v, ar);
    return v;
  } else if constexpr (rule == Rule::adlHook) {
    T v{};
    archive::Decoder ar{r};
    hookLookup::callAdlHook(ar, v);
    return v;
  } else if constexpr (isRaw<T>()) {
    return decodeRaw<T>(r);
  } else if constexpr (rule == Rule::string) {
    using Ch = typename T::value_type;
    const std::size_t n = readCount<T, Ch>(r);
    if constexpr (sizeof(Ch) == 1) {
      // Built straight from the bytes: no zero fill of a buffer that is then overwritten.
      const std::byte* p = r.take(n);
      return T(reinterpret_cast<const Ch*>(p), n);
    } else {
      T s;
      s.resize(n);
      r.read(s.data(), n * sizeof(Ch));
      return s;
    }
  } else if constexpr (rule == Rule::vectorBool) {
    const std::size_t n = readCount<T, bool>(r);
    T v;
    v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) v.push_back(decodeRaw<bool>(r));
    return v;
  } else if constexpr (rule == Rule::vector) {
    using E = typename T::value_type;
    const std::size_t n = readCount<T, E>(r);
    T v;
    if constexpr (isRaw<E>() && std::is_default_constructible_v<E> &&
                  std::is_copy_assignable_v<E>) {
      const std::byte* p = r.take(n * sizeof(E));
      if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) == 0) {
        // Copied straight from aligned bytes: no zero fill of a buffer that is then overwritten.
        const E* first = reinterpret_cast<const E*>(p);
        v.assign(first, first + n);
      } else {
        v.resize(n);
        if (n != 0) std::memcpy(static_cast<void*>(v.data()), p, n * sizeof(E));
      }
      if constexpr (hasBool<E>())
        for (const auto& e : v) checkBools(e);
    } else {
      if constexpr (minEncodedSize<E>() > 0) v.reserve(n);
      decodeElements<T, E>(r, n, [&] { v.push_back(decodeValue<E>(r)); });
    }
    return v;
  } else if constexpr (rule == Rule::stdArray) {
    using E = std::remove_cv_t<typename T::value_type>;
    if constexpr (std::is_default_constructible_v<E> && std::is_move_assignable_v<E> &&
                  !std::is_const_v<typename T::value_type>) {
      T a{};
      for (auto& e : a) e = decodeValue<E>(r);
      return a;
    } else {
      return decodeArrayByIndex<T>(r, std::make_index_sequence<std::tuple_size_v<T>>{});
    }
  } else if constexpr (rule == Rule::sequence) {
    using E = typename T::value_type;
    const std::size_t n = readCount<T, E>(r);
    T c;
    decodeElements<T, E>(r, n, [&] { c.push_back(decodeValue<E>(r)); });
    return c;
  } else if constexpr (rule == Rule::forwardList) {
    using E = typename T::value_type;
    const std::size_t n = readCount<T, E>(r);
    T c;
    auto tail = c.before_begin();
    decodeElements<T, E>(r, n, [&] { tail = c.emplace_after(tail, decodeValue<E>(r)); });
    return c;
  } else if constexpr (rule == Rule::map) {
    using K = typename T::key_type;
    using V = typename T::mapped_type;
    const std::size_t n = readCount<T, std::pair<K, V>>(r);
    T m;
    constexpr bool ordered = requires { m.lower_bound(std::declval<const K&>()); };
    if constexpr (!ordered && minEncodedSize<std::pair<K, V>>() > 0) m.reserve(n);
    decodeElements<T, std::pair<K, V>>(r, n, [&] {
      K key = decodeValue<K>(r);
      V value = decodeValue<V>(r);
      // Keys come sorted from the encoder, so the end is the right hint; duplicate keys (only in
      // corrupt input for map) keep the first value.
      if constexpr (ordered)
        m.emplace_hint(m.end(), std::move(key), std::move(value));
      else
        m.emplace(std::move(key), std::move(value));
    });
    return m;
  } else if constexpr (rule == Rule::set) {
    using K = typename T::key_type;
    const std::size_t n = readCount<T, K>(r);
    T s;
    constexpr bool ordered = requires { s.lower_bound(std::declval<const K&>()); };
    if constexpr (!ordered && minEncodedSize<K>() > 0) s.reserve(n);
    decodeElements<T, K>(r, n, [&] {
      if constexpr (ordered)
        s.emplace_hint(s.end(), decodeValue<K>(r));
      else
        s.emplace(decodeValue<K>(r));
    });
    return s;
  } else if constexpr (rule == Rule::pair || rule == Rule::tuple) {
    return decodeFields<T>(r, typename ComponentsOf<T>::type{});
  } else if constexpr (rule == Rule::optional) {
    using E = std::remove_cv_t<typename T::value_type>;
    const auto flag = r.readRaw<std::uint8_t>();
    if (flag == 0) return T{};
    if (flag != 1) throw badFlagByte(typeName<T>(), flag, false);
    return T{std::in_place, decodeValue<E>(r)};
  } else if constexpr (rule == Rule::variant) {
    const std::size_t index = r.readRaw<VariantIndex<T>>();
    if (index >= std::variant_size_v<T>) throw badAlternative(typeName<T>(), index, std::variant_size_v<T>);
    return decodeVariant<T>(r, index, std::make_index_sequence<std::variant_size_v<T>>{});
  } else if constexpr (rule == Rule::empty) {
    return T{};
  } else if constexpr (rule == Rule::aggregate) {
    return decodeFields<T>(r, FieldTypes<T>{});
  } else {
    static_assert(dependentFalse<T>, "flock internal: no decode rule");
  }
}

namespace archive {

template <class... Fields>
void Encoder::operator()(const Fields&... fields) {
  (requireCodable<BinaryCodec, Fields>(), ...);
  if constexpr ((Serializable<Fields> && ...))
    (encodeValue<std::remove_cv_t<Fields>>(*w_, fields), ...);
}

template <class... Fields>
void Decoder::operator()(Fields&... fields) {
  static_assert(
      !(std::is_const_v<Fields> || ...),
      "flock: a serialize hook handed a const field to the archive; decoding must write into it");
  (requireCodable<BinaryCodec, Fields>(), ...);
  if constexpr ((Serializable<Fields> && ...)) ((fields = decodeValue<Fields>(*r_)), ...);
}

} // namespace archive
} // namespace detail
} // namespace flockmp

namespace flockmp {

namespace detail {
/// std::filesystem::path, recognised by its interface so that the codec need not include
/// <filesystem> (half a second of compile time in every program): a class with a string_type,
/// native(), construction from that string and the decomposition members of a path.
template <class T>
concept PathLike = requires(const T& p, const typename T::string_type& s) {
  { p.native() } -> std::same_as<const typename T::string_type&>;
  T(s);
  { p.root_name() } -> std::same_as<T>;
  { p.parent_path() } -> std::same_as<T>;
  { p.filename() } -> std::same_as<T>;
  { p.extension() } -> std::same_as<T>;
};
} // namespace detail

/// std::filesystem::path (and a path class with the same interface) travels as its native string.
template <class T>
  requires detail::PathLike<T>
struct Serializer<T> {
  static void encode(ByteWriter& w, const T& p) { BinaryCodec::encode(w, p.native()); }
  static T decode(ByteReader& r) { return T(BinaryCodec::decode<typename T::string_type>(r)); }
};

} // namespace flockmp

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE CodecError truncatedInput(std::string_view type, std::size_t needed, std::size_t left) {
  if (type.empty()) return CodecError(fmt::format("flock: truncated input: needed {} more bytes, {} left", needed, left));
  return CodecError(fmt::format("flock: cannot decode `{}`: truncated input: needed {} more bytes, {} left", type,
                                needed, left));
}

FLOCK_ENGINE_INLINE CodecError trailingBytes(std::string_view type, std::size_t left) {
  if (type.empty()) return CodecError(fmt::format("flock: {} unexpected trailing bytes after the value", left));
  return CodecError(fmt::format("flock: cannot decode `{}`: {} unexpected trailing bytes after the value", type, left));
}

FLOCK_ENGINE_INLINE CodecError badFlagByte(std::string_view flagOf, unsigned byte, bool prefixed) {
  const std::string_view prefix = prefixed ? "flock: " : "";
  if (flagOf.empty()) return CodecError(fmt::format("{}invalid bool byte {:#04x} (must be 0 or 1)", prefix, byte));
  return CodecError(fmt::format("{}invalid `{}` flag byte {:#04x} (must be 0 or 1)", prefix, flagOf, byte));
}

FLOCK_ENGINE_INLINE CodecError decodeFailed(std::string_view type, std::string_view cause) {
  if (cause.starts_with("flock: ")) cause.remove_prefix(7);
  return CodecError(fmt::format("flock: cannot decode `{}`: {}", type, cause));
}

FLOCK_ENGINE_INLINE CodecError countTooLarge(std::string_view type, std::uint64_t count, std::size_t left) {
  return CodecError(
      fmt::format("element count {} of `{}` is more than the {} remaining bytes can hold", count, type, left));
}

FLOCK_ENGINE_INLINE CodecError tooManyEmptyElements(std::string_view type) {
  return CodecError(fmt::format("`{}` holds more elements that encode to no bytes than one input may ({} MiB)", type,
                                emptyElementBudget >> 20));
}

FLOCK_ENGINE_INLINE CodecError valuelessVariant(std::string_view type) {
  return CodecError(fmt::format("flock: cannot encode a valueless `{}`", type));
}

FLOCK_ENGINE_INLINE CodecError badAlternative(std::string_view type, std::size_t index, std::size_t count) {
  return CodecError(
      fmt::format("invalid alternative index {} for `{}`, which has {} alternatives", index, type, count));
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
