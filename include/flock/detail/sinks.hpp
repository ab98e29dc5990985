// flock internals: result sinks, where a call's results go in the parent. apply and tryApply
// fill a vector by index; streaming calls will use a bounded reorder window, map-reduce a fold.
#pragma once

#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "../codec.hpp"
#include "../error.hpp"
#include "posix.hpp"

namespace flockmp::detail {

/// Results of this type travel as raw bytes: the worker constructs them in its output buffer
/// and the parent reads them straight into the result vector, with no codec on either side.
template <class Codec, class R>
constexpr bool rawResultFor() {
  if constexpr (std::is_void_v<R>) return true;
  else if constexpr (std::is_same_v<R, bool>) return false; // std::vector<bool> has no data() to read into
  else if constexpr (requires { Codec::template isRaw<R>; }) return Codec::template isRaw<R>;
  else return false;
}

/// Where a call's results go, parent side (a vector by index for apply; streams come later).
class ResultSink {
public:
  virtual ~ResultSink() = default;
  /// True when results are trivially copyable and travel as raw blocks that the parent reads
  /// straight into the sink; false when each result is encoded by the codec.
  [[nodiscard]] virtual bool rawResults() const noexcept = 0;
  /// Bytes per raw result (0 for a void callable).
  [[nodiscard]] virtual std::size_t rawElementSize() const noexcept = 0;
  /// Where the raw result of input `index` goes.
  [[nodiscard]] virtual std::byte* rawDestination(std::size_t index) noexcept = 0;
  /// Before any worker is forked: reserve storage (untouched) and keep it out of the workers, so
  /// that filling it never copies a page on write.
  virtual void reserve() {}
  /// Once the workers are running: initialize storage (the writes overlap the first batch).
  virtual void prepare() = 0;
  /// Decode the result of input `index` (throws CodecError on bad bytes).
  virtual void accept(std::size_t index, ByteReader& payload) = 0;
  /// Inputs [begin, begin + count) are resolved: their results (or failures) are in place.
  virtual void done(std::size_t begin, std::size_t count) noexcept {
    (void)begin;
    (void)count;
  }
  /// A failure for the sink to keep with its input (a stream's window): true when it took it;
  /// false (apply) when the engine collects failures for the end of the call.
  virtual bool keepFailure(Failure& failure) {
    (void)failure;
    return false;
  }
  /// mapReduce: merge a worker's fold of some inputs (throws CodecError on bad bytes); false
  /// when the sink takes no partial folds.
  virtual bool acceptPartial(ByteReader& payload) {
    (void)payload;
    return false;
  }
};

/// The result sink of apply and tryApply: a vector with one slot per input, filled by index as
/// results arrive (raw blocks are read straight into it), handed over whole at the end.
template <class Codec, class R>
class VectorSink final : public ResultSink {
public:
  static constexpr bool raw = rawResultFor<Codec, R>();
  /// Encoded results are stored as R itself (no std::optional around it, so the vector is
  /// handed over as is) when an empty R is cheap: a noexcept default constructor, as std::string
  /// and the standard containers have.
  static constexpr bool direct = [] {
    if constexpr (std::is_void_v<R> || raw) return true;
    else if constexpr (std::is_same_v<R, bool>) return false; // std::vector<bool> packs bits
    else return std::is_nothrow_default_constructible_v<R> && std::is_nothrow_move_assignable_v<R>;
  }();
  static constexpr std::size_t elementSize = [] {
    if constexpr (std::is_void_v<R>) return std::size_t{0};
    else return sizeof(R);
  }();

  explicit VectorSink(std::size_t n) noexcept : n_(n) {}

  [[nodiscard]] bool rawResults() const noexcept override { return raw; }
  [[nodiscard]] std::size_t rawElementSize() const noexcept override { return elementSize; }
  [[nodiscard]] std::byte* rawDestination(std::size_t index) noexcept override {
    if constexpr (raw && !std::is_void_v<R>) return reinterpret_cast<std::byte*>(values_.data() + index);
    else {
      (void)index;
      return nullptr;
    }
  }
  void reserve() override {
    if constexpr (!std::is_void_v<R>) {
      values_.reserve(n_);
      resultPages_ = ResultPages(values_.data(), n_ * sizeof(typename decltype(values_)::value_type));
    }
  }
  void prepare() override {
    if constexpr (!std::is_void_v<R>) values_.resize(n_); // within the reserved capacity: same pages
  }
  void accept(std::size_t index, ByteReader& payload) override {
    if constexpr (!raw) {
      if constexpr (direct) values_[index] = Codec::template decode<R>(payload);
      else values_[index].emplace(Codec::template decode<R>(payload));
      payload.expectEnd();
    } else {
      (void)index;
      (void)payload;
    }
  }

  /// One outcome per input; `failures` sorted by index.
  std::vector<Outcome<R>> outcomes(const std::vector<Failure>& failures) {
    std::vector<Outcome<R>> out;
    out.reserve(n_);
    auto f = failures.begin();
    for (std::size_t i = 0; i < n_; ++i) {
      if (f != failures.end() && f->index == i) {
        out.emplace_back(*f);
        while (f != failures.end() && f->index == i) ++f;
        continue;
      }
      if constexpr (std::is_void_v<R>) out.emplace_back();
      else if constexpr (direct) out.emplace_back(std::move(values_[i]));
      else out.emplace_back(std::move(*values_[i]));
    }
    return out;
  }

  /// All results, when no input failed: stored as R, they are handed over without a copy.
  std::vector<R> values() {
    resultPages_.release();
    if constexpr (direct) {
      return std::move(values_);
    } else {
      std::vector<R> v;
      v.reserve(n_);
      for (auto& o : values_) v.push_back(std::move(*o));
      return v;
    }
  }

private:
  std::size_t n_;
  std::conditional_t<std::is_void_v<R>, char, std::conditional_t<direct, std::vector<R>, std::vector<std::optional<R>>>> values_{};
  ResultPages resultPages_; // declared after values_: released before the buffer is freed
};

} // namespace flockmp::detail
