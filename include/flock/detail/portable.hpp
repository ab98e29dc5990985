// flock internals: callables that a persistent worker can rebuild. A pool's worker did not
// inherit the callable of a later call, so the call sends what rebuilds it: the address of a
// template thunk (and of a function pointer) as an offset inside its loaded object, which is at
// the same offset in the worker because the worker runs the same binary, plus the bytes of a
// codable function object or of the object of a member function.
#pragma once

#include "config.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include <fmt/core.h>

#include "../codec.hpp"
#include "../error.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <link.h>
#include <cstring>
#endif

namespace flockmp::detail {

/// Where a piece of code is, in terms that hold in another process running the same binary: the
/// loaded object as the dynamic linker names it (empty for the program itself) and the offset
/// from that object's load address.
struct CodeRef {
  std::string object;
  std::uint64_t offset = 0;

  void encode(ByteWriter& w) const;
  static CodeRef decode(ByteReader& r);
};

/// The CodeRef of an address in this process. Throws flockmp::Error when no loaded object holds it
/// (code generated at run time cannot be found again in a worker).
FLOCK_ENGINE_INLINE CodeRef codeRefOf(const void* address);

/// The address a CodeRef names in this process. Throws flockmp::Error naming the object when it
/// is not loaded here (a library the parent opened with dlopen after the worker started).
FLOCK_ENGINE_INLINE void* resolveCodeRef(const CodeRef& ref);

template <class F>
concept FunctionPointer = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

/// A member function bound to an object, as a pool carries it: the object travels by the codec.
template <class M, class Obj>
struct MemberCall {
  M method;
  Obj object;
  template <class... A>
  auto operator()(A&&... args) -> decltype(std::invoke(method, object, std::forward<A>(args)...)) {
    return std::invoke(method, object, std::forward<A>(args)...);
  }
};

/// A wrapper that adds behaviour around a callable it holds as `wrapped` (a DatabaseAsync's
/// connections, say) travels as that callable: it is portable when the callable is.
template <class F>
concept WrapsCallable = requires(F& f) {
  typename F::WrappedCallable;
  requires std::is_same_v<decltype(f.wrapped), typename F::WrappedCallable>;
};

template <class T>
struct IsMemberCall : std::false_type {};
template <class M, class Obj>
struct IsMemberCall<MemberCall<M, Obj>> : std::true_type {};

/// How a callable of type F reaches a persistent worker.
enum class Portability {
  none,            ///< it cannot: it holds state that is neither empty nor codable (a capture)
  functionPointer, ///< by the offset of the function
  empty,           ///< rebuilt by default construction (captureless lambdas, empty objects)
  codable,         ///< by the codec (an aggregate or a type with a codec hook)
  member,          ///< the member function by offset, the object by the codec
};

template <class Codec, class F>
consteval Portability portabilityOf() {
  if constexpr (FunctionPointer<F>) {
    return Portability::functionPointer;
  } else if constexpr (WrapsCallable<F>) {
    return portabilityOf<Codec, typename F::WrappedCallable>();
  } else if constexpr (IsMemberCall<F>::value) {
    if constexpr (CodecFor<Codec, decltype(F::object)>) return Portability::member;
    else return Portability::none;
  } else if constexpr (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>) {
    return Portability::empty;
  } else if constexpr (std::is_class_v<F> && CodecFor<Codec, F> && ruleOf<F>() != Rule::trivial) {
    // Rule::trivial is how a closure with captures looks to the codec: its bytes may hold the
    // addresses of what it captured by reference, meaningless in another process.
    return Portability::codable;
  } else {
    return Portability::none;
  }
}

template <class Codec, class F>
concept PortableCallable = portabilityOf<Codec, F>() != Portability::none;

template <class M>
void encodeMemberPointer(ByteWriter& w, M method) {
  static_assert(sizeof(M) == 2 * sizeof(std::uintptr_t), "flock: unexpected member function pointer layout");
  std::uintptr_t parts[2];
  std::memcpy(parts, &method, sizeof parts);
#if defined(__aarch64__) || defined(__arm__)
  const bool isVirtual = (parts[1] & 1) != 0; // the ARM C++ ABI flags virtual calls in the adjustment
#else
  const bool isVirtual = (parts[0] & 1) != 0; // Itanium: a vtable offset + 1
#endif
  w.writeRaw(static_cast<std::uint8_t>(isVirtual));
  if (isVirtual || parts[0] == 0) {
    w.writeRaw(parts[0]);
  } else {
    codeRefOf(reinterpret_cast<const void*>(parts[0])).encode(w);
  }
  w.writeRaw(parts[1]);
}

template <class M>
M decodeMemberPointer(ByteReader& r) {
  std::uintptr_t parts[2];
  const bool isVirtual = r.readRaw<std::uint8_t>() != 0;
  if (isVirtual) {
    parts[0] = r.readRaw<std::uintptr_t>();
  } else {
    parts[0] = reinterpret_cast<std::uintptr_t>(resolveCodeRef(CodeRef::decode(r)));
  }
  parts[1] = r.readRaw<std::uintptr_t>();
  M method;
  std::memcpy(&method, parts, sizeof parts);
  return method;
}

/// Parent side: the bytes that rebuild `fn` in a worker.
template <class Codec, class F>
void encodeCallable(ByteWriter& w, const F& fn) {
  constexpr Portability p = portabilityOf<Codec, F>();
  if constexpr (WrapsCallable<F>) {
    encodeCallable<Codec, typename F::WrappedCallable>(w, fn.wrapped);
  } else if constexpr (p == Portability::functionPointer) {
    codeRefOf(reinterpret_cast<const void*>(fn)).encode(w);
  } else if constexpr (p == Portability::member) {
    encodeMemberPointer(w, fn.method);
    Codec::encode(w, fn.object);
  } else if constexpr (p == Portability::codable) {
    Codec::encode(w, fn);
  } else {
    (void)w;
    (void)fn;
  }
}

/// Worker side: the callable rebuilt from encodeCallable's bytes.
template <class Codec, class F>
F decodeCallable(ByteReader& r) {
  constexpr Portability p = portabilityOf<Codec, F>();
  if constexpr (WrapsCallable<F>) {
    return F{decodeCallable<Codec, typename F::WrappedCallable>(r)};
  } else if constexpr (p == Portability::functionPointer) {
    return reinterpret_cast<F>(resolveCodeRef(CodeRef::decode(r)));
  } else if constexpr (p == Portability::member) {
    auto method = decodeMemberPointer<decltype(F::method)>(r);
    return F{method, Codec::template decode<decltype(F::object)>(r)};
  } else if constexpr (p == Portability::codable) {
    return Codec::template decode<F>(r);
  } else {
    (void)r;
    return F{};
  }
}

template <class F>
struct PortabilityCheck {
  static_assert(sizeof(F) == 0,
                "flock: a pool's workers cannot rebuild this callable: it holds state (a lambda capture?) "
                "that is neither empty nor carried by the codec. On a pool (BaseMultiProc) pass a function "
                "pointer, a captureless lambda, an empty function object, a member function with a codable "
                "object, or a function object the codec can carry (an aggregate of codable fields). A "
                "capturing lambda works with the one-shot calls (FunctionAsync::apply), whose workers are "
                "forked from the caller.");
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE void CodeRef::encode(ByteWriter& w) const {
  w.writeRaw(static_cast<std::uint32_t>(object.size()));
  w.write(object.data(), object.size());
  w.writeRaw(offset);
}

FLOCK_ENGINE_INLINE CodeRef CodeRef::decode(ByteReader& r) {
  CodeRef ref;
  const auto len = r.readRaw<std::uint32_t>();
  const std::byte* p = r.take(len);
  ref.object.assign(reinterpret_cast<const char*>(p), len);
  ref.offset = r.readRaw<std::uint64_t>();
  return ref;
}

FLOCK_ENGINE_INLINE CodeRef codeRefOf(const void* address) {
  struct Search {
    std::uintptr_t address;
    CodeRef ref;
    bool found = false;
  } search{reinterpret_cast<std::uintptr_t>(address), {}, false};
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto& s = *static_cast<Search*>(data);
        for (int k = 0; k < info->dlpi_phnum; ++k) {
          const auto& ph = info->dlpi_phdr[k];
          if (ph.p_type != PT_LOAD) continue;
          const std::uintptr_t low = info->dlpi_addr + ph.p_vaddr;
          if (s.address >= low && s.address - low < ph.p_memsz) {
            s.ref.object = info->dlpi_name ? info->dlpi_name : "";
            s.ref.offset = s.address - info->dlpi_addr;
            s.found = true;
            return 1;
          }
        }
        return 0;
      },
      &search);
  if (!search.found)
    throw Error(fmt::format("flock: the function at {} is in no loaded object (code made at run time cannot run "
                            "in a pool's worker)",
                            address));
  return std::move(search.ref);
}

FLOCK_ENGINE_INLINE void* resolveCodeRef(const CodeRef& ref) {
  struct Search {
    const CodeRef* ref;
    std::uintptr_t address = 0;
    bool found = false;
  } search{&ref};
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto& s = *static_cast<Search*>(data);
        const char* name = info->dlpi_name ? info->dlpi_name : "";
        if (s.ref->object != name) return 0;
        for (int k = 0; k < info->dlpi_phnum; ++k) {
          const auto& ph = info->dlpi_phdr[k];
          if (ph.p_type == PT_LOAD && s.ref->offset >= ph.p_vaddr && s.ref->offset - ph.p_vaddr < ph.p_memsz) {
            s.address = info->dlpi_addr + s.ref->offset;
            s.found = true;
            return 1;
          }
        }
        return 0;
      },
      &search);
  if (!search.found)
    throw Error(fmt::format("flock: the function to run lives in {}, which this worker has not loaded (load the "
                            "library before the pool starts its workers, or link it into the program)",
                            ref.object.empty() ? std::string("the program") : ref.object));
  return reinterpret_cast<void*>(search.address);
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
