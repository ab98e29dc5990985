// flock: Stream, what the streaming calls return (imap, imapUnordered and their try-variants).
#pragma once

#include <bit>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "detail/stream.hpp"

namespace flockmp {

/// A single-pass input range of a streaming call's items, produced while it is iterated: each
/// step reads more inputs (as the window allows), waits for the next result and gives it back.
/// Leaving the loop early (break, an exception) and destroying the stream stops the rest of the
/// call: inputs not yet handed out are dropped, workers still busy get 200 ms to finish and are
/// killed after that (a pool then replaces them at its next call). A stream from a pool holds the
/// pool until it is destroyed: other calls wait, and another call from the same thread throws.
///
///   for (const flockmp::Outcome<int>& o : pool.tryImap(std::views::iota(0), square)) ...
template <class T>
class Stream {
public:
  using value_type = T;

  class iterator {
  public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;

    iterator() = default;
    T& operator*() const noexcept { return s_->buf_[s_->pos_]; }
    T* operator->() const noexcept { return &s_->buf_[s_->pos_]; }
    iterator& operator++() {
      s_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept { return it.atEnd(); }

  private:
    friend class Stream;
    explicit iterator(Stream* s) noexcept : s_(s) {}
    [[nodiscard]] bool atEnd() const noexcept { return s_->pos_ >= s_->buf_.size(); }
    Stream* s_ = nullptr;
  };

  explicit Stream(std::unique_ptr<detail::StreamSource<T>> source) noexcept : source_(std::move(source)) {}
  Stream(Stream&&) noexcept = default;
  Stream& operator=(Stream&&) noexcept = default;

  /// Waits for the first item not yet given; after an exception from an earlier iteration
  /// (a value stream's TaskError), the stream goes on with the next input.
  iterator begin() {
    if (pos_ >= buf_.size()) refill();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

private:
  void advance() {
    if (++pos_ < buf_.size()) return;
    refill();
  }
  void refill() {
    buf_.clear();
    pos_ = 0;
    source_->next(buf_);
  }

  std::unique_ptr<detail::StreamSource<T>> source_;
  std::vector<T> buf_; // items taken from the source and not yet passed (a chunk at a time)
  std::size_t pos_ = 0;
};

} // namespace flockmp

namespace flockmp::detail {

/// The window of a stream: Options::maxInFlight (32768 inputs per worker when 0), rounded down
/// to a power of two.
inline std::size_t streamCapacity(const Options& opts) {
  const std::size_t want = opts.maxInFlight > 0 ? opts.maxInFlight : 32768 * workerCount(opts, SIZE_MAX);
  return std::bit_floor(want);
}

template <StreamKind K, class R>
using StreamOf = Stream<typename StreamItemOf<K, R>::type>;

/// A stream over `items` with `fn`: every misuse is one compile-time error here. `Inherited`: the
/// workers are forked from the caller while the stream lives (any callable); otherwise the
/// callable must be portable. The lease gives the engine (a pool's, or one for this stream).
template <StreamKind K, class Codec, bool Inherited, class Range, class F, class MakeLease>
auto makeStream(Range&& items, const F& fn, const Options& opts, MakeLease&& makeLease)
    -> StreamOf<K, typename SafeResult<F, std::remove_cv_t<std::ranges::range_value_t<Range>>&>::type> {
  using In = std::remove_cv_t<std::ranges::range_value_t<Range>>;
  using R = typename SafeResult<F, In&>::type;
  using Out = StreamOf<K, R>;
  if constexpr (!CallableOn<F, In&>) {
    requireCallable<F, In&>();
    return Out(nullptr);
  } else if constexpr (!Inherited && !PortableCallable<Codec, F>) {
    (void)PortabilityCheck<F>{};
    return Out(nullptr);
  } else if constexpr (!CodecFor<Codec, In>) {
    requireCodable<Codec, In>(); // a stream's inputs are read after its workers start: they travel
    return Out(nullptr);
  } else if constexpr (!std::is_void_v<R> && !CodecFor<Codec, R>) {
    requireCodable<Codec, R>();
    return Out(nullptr);
  } else {
    validateOptions(opts);
    using State = StreamState<K, Codec, Range, F, In, R, Inherited>;
    const std::size_t capacity = streamCapacity(opts);
    return Out(std::make_unique<State>(makeLease(), std::forward<Range>(items), fn, opts, capacity));
  }
}

} // namespace flockmp::detail
