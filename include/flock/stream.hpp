// flock: Stream, what the streaming calls return (imap, imapUnordered and their try-variants).
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>

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
    T& operator*() const noexcept { return *s_->current_; }
    T* operator->() const noexcept { return &*s_->current_; }
    iterator& operator++() {
      s_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept { return it.atEnd(); }

  private:
    friend class Stream;
    explicit iterator(Stream* s) noexcept : s_(s) {}
    [[nodiscard]] bool atEnd() const noexcept { return !s_->current_; }
    Stream* s_ = nullptr;
  };

  explicit Stream(std::unique_ptr<detail::StreamSource<T>> source) noexcept : source_(std::move(source)) {}
  Stream(Stream&&) noexcept = default;
  Stream& operator=(Stream&&) noexcept = default;

  /// Starts the stream (the first item is waited for here); a second call continues where the
  /// last iteration stopped.
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

private:
  void advance() { current_ = source_->next(); }

  std::unique_ptr<detail::StreamSource<T>> source_;
  std::optional<T> current_;
  bool started_ = false;
};

} // namespace flockmp

namespace flockmp::detail {

/// The window of a stream: Options::maxInFlight, or 4096 inputs per worker.
inline std::size_t streamCapacity(const Options& opts) {
  return opts.maxInFlight > 0 ? opts.maxInFlight : 4096 * workerCount(opts, SIZE_MAX);
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
    using View = std::views::all_t<Range>;
    using State = StreamState<K, Codec, View, F, In, R, Inherited>;
    const std::size_t capacity = streamCapacity(opts);
    return Out(std::make_unique<State>(makeLease(), std::views::all(std::forward<Range>(items)), fn, opts, capacity));
  }
}

} // namespace flockmp::detail
