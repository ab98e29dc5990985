// flock internals: streaming calls (imap, imapUnordered and their try-variants). Inputs are read
// from the caller's range only as a bounded window allows, handed to pool workers as they are
// read (through the codec), and their results are given back one by one from a ring buffer.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "run.hpp"

namespace flockmp {

/// An input's index and what it gave (the items of imapUnordered and tryImapUnordered).
template <class T>
struct Indexed {
  std::size_t index = 0;
  T value;
};

} // namespace flockmp

namespace flockmp::detail {

/// The thunk of a stream whose workers were forked from the caller after its callable existed
/// (a one-shot stream under Context::fork): the callable's bytes are its address, valid in
/// every worker because each is a copy of the caller made while the stream lives.
template <class Codec, class F, class In, class R>
void inheritedThunk(std::span<const std::byte> callable, std::size_t begin, std::size_t end,
                    std::span<const std::byte> inputs, WorkerControl& ctl, ResultWriter& out) {
  F* fn = nullptr;
  if (callable.size() != sizeof fn) throw CodecError("flock: malformed inherited callable");
  std::memcpy(&fn, callable.data(), sizeof fn);
  runDecoded<Codec, In>(*fn, begin, end, inputs,
                        [&](std::size_t b, std::size_t e, auto&& call) { runResults<Codec, R>(b, e, call, ctl, out); });
}

/// The window of a stream: `capacity` slots, input i in slot i % capacity. A slot holds the
/// input (for retries) until its result is taken, then the result until the consumer takes it.
/// Batches never cross a multiple of the capacity, so a batch's raw inputs and raw results are
/// contiguous here.
template <class Codec, class In, class R>
class StreamWindow final : public ResultSink {
public:
  static constexpr bool rawIn = rawInputFor<Codec, In>();
  static constexpr bool raw = rawResultFor<Codec, R>();
  static constexpr std::size_t elementSize = [] {
    if constexpr (std::is_void_v<R>) return std::size_t{0};
    else return sizeof(R);
  }();

  /// `capacity`: a power of two (slots are found with a mask: a division per input would cost
  /// more than a tiny task).
  StreamWindow(std::size_t capacity, bool ordered)
      : cap_(capacity), mask_(capacity - 1), ordered_(ordered), state_(capacity, Slot::free) {
    inputs_.resize(capacity);
    if constexpr (!std::is_void_v<R>) values_.resize(capacity);
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }

  // ResultSink
  [[nodiscard]] bool rawResults() const noexcept override { return raw; }
  [[nodiscard]] std::size_t rawElementSize() const noexcept override { return elementSize; }
  [[nodiscard]] std::byte* rawDestination(std::size_t index) noexcept override {
    if constexpr (raw && !std::is_void_v<R>) return reinterpret_cast<std::byte*>(values_.data() + (index & mask_));
    else {
      (void)index;
      return nullptr;
    }
  }
  void prepare() override {}
  void accept(std::size_t index, ByteReader& payload) override {
    if constexpr (!raw) {
      values_[index & mask_].emplace(Codec::template decode<R>(payload));
      payload.expectEnd();
    } else {
      (void)index;
      (void)payload;
    }
  }
  void done(std::size_t begin, std::size_t count) noexcept override {
    // A resolved range lies in one batch, which never crosses the ring's wrap.
    std::memset(state_.data() + (begin & mask_), static_cast<int>(Slot::resolved), count);
    if (!ordered_)
      for (std::size_t i = begin; i < begin + count; ++i) completed_.push_back(i);
  }
  bool keepFailure(Failure& f) override {
    failures_.insert_or_assign(f.index, std::move(f));
    return true;
  }

  // The stream's side.
  /// Read inputs from `it` into slots [index, limit) until `end`, or (checked every 64) until
  /// `deadline`; returns the index after the last one read.
  template <class It, class S, class Deadline>
  std::size_t read(It& it, const S& end, std::size_t index, std::size_t limit, Deadline deadline) {
    // Locals, not members: a store through a member pointer would make the compiler reload them.
    Slot* const st = state_.data();
    auto* const in = inputs_.data();
    const std::size_t mask = mask_;
    const std::size_t from = index;
    while (index < limit && it != end) {
      const std::size_t k = index & mask;
      if constexpr (rawIn) in[k] = static_cast<In>(*it);
      else in[k].emplace(*it);
      st[k] = Slot::held;
      ++index;
      ++it;
      if ((index - from) % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
    }
    return index;
  }
  [[nodiscard]] const In& input(std::size_t index) const noexcept {
    if constexpr (rawIn) return inputs_[index & mask_];
    else return *inputs_[index & mask_];
  }
  [[nodiscard]] const In* inputData(std::size_t index) const noexcept {
    if constexpr (rawIn) return inputs_.data() + (index & mask_);
    else return nullptr;
  }
  [[nodiscard]] bool isResolved(std::size_t index) const noexcept { return state_[index & mask_] == Slot::resolved; }
  [[nodiscard]] bool failed(std::size_t index) const noexcept {
    return !failures_.empty() && failures_.find(index) != failures_.end();
  }
  /// Take the value of input `index` (which did not fail) and free its slot.
  auto takeValue(std::size_t index) {
    const std::size_t k = index & mask_;
    state_[k] = Slot::free;
    if constexpr (!rawIn) inputs_[k].reset();
    if constexpr (std::is_void_v<R>) return;
    else if constexpr (raw) return R(values_[k]);
    else {
      R v(std::move(*values_[k]));
      values_[k].reset();
      return v;
    }
  }
  [[nodiscard]] bool isFree(std::size_t index) const noexcept { return state_[index & mask_] == Slot::free; }
  /// Unordered streams: the next resolved input not yet taken, in completion order.
  [[nodiscard]] std::optional<std::size_t> nextCompleted() {
    if (completed_.empty()) return std::nullopt;
    const std::size_t i = completed_.front();
    completed_.pop_front();
    return i;
  }
  /// Put back what nextCompleted gave: it is taken next.
  void giveBackCompleted(std::size_t index) { completed_.push_front(index); }
  /// Take what input `index` gave and free its slot.
  Outcome<R> take(std::size_t index) {
    const std::size_t k = index & mask_;
    state_[k] = Slot::free;
    if constexpr (!rawIn) inputs_[k].reset();
    if (auto it = failures_.empty() ? failures_.end() : failures_.find(index); it != failures_.end()) {
      Failure f = std::move(it->second);
      failures_.erase(it);
      if constexpr (!std::is_void_v<R> && !raw) values_[k].reset();
      return Outcome<R>(std::move(f));
    }
    if constexpr (std::is_void_v<R>) return Outcome<R>();
    else if constexpr (raw) return Outcome<R>(values_[k]);
    else {
      Outcome<R> o(std::move(*values_[k]));
      values_[k].reset();
      return o;
    }
  }

private:
  // Not a character type: stores to it do not alias every other object for the optimizer.
  enum class Slot : std::uint8_t { free, held, resolved };
  std::size_t cap_;
  std::size_t mask_;
  bool ordered_;
  std::vector<Slot> state_;
  std::conditional_t<rawIn, std::vector<In>, std::vector<std::optional<In>>> inputs_;
  std::conditional_t<std::is_void_v<R>, char, std::conditional_t<raw, std::vector<R>, std::vector<std::optional<R>>>> values_{};
  std::unordered_map<std::size_t, Failure> failures_;
  std::deque<std::size_t> completed_; // unordered: resolved inputs in completion order
};

/// The engine's view of a stream: its inputs are in the window, its callable is portable (a
/// pool) or inherited (`Inherited`, a one-shot stream under Context::fork).
template <class Codec, class F, class In, class R, bool Inherited>
class StreamJob final : public JobBase {
public:
  StreamJob(F& fn, StreamWindow<Codec, In, R>& window) noexcept : fn_(fn), window_(window) {}

  [[nodiscard]] std::size_t size() const noexcept override { return 0; } // open-ended: see Engine::extend
  [[nodiscard]] ResultSink& sink() noexcept override { return window_; }
  void runBatch(std::size_t, std::size_t, WorkerControl&, ResultWriter&) override {
    ::_exit(workerInternalErrorExit); // a stream's workers run thunks, never an inherited job
  }
  [[nodiscard]] bool portable() const noexcept override { return true; }
  [[nodiscard]] std::size_t wrap() const noexcept override { return window_.capacity(); }
  void encodeCall(ByteWriter& w) override {
    if constexpr (Inherited) {
      static const CodeRef thunk = codeRefOf(reinterpret_cast<const void*>(&inheritedThunk<Codec, F, In, R>));
      encodeCallHead(w, thunk);
      const F* address = &fn_;
      w.write(&address, sizeof address);
    } else {
      static const CodeRef thunk = codeRefOf(reinterpret_cast<const void*>(&poolThunk<Codec, F, In, R>));
      encodeCallHead(w, thunk);
      encodeCallable<Codec, F>(w, fn_);
    }
  }
  [[nodiscard]] std::size_t rawInputBytes(std::size_t begin, std::size_t end) const noexcept override {
    if constexpr (rawInputFor<Codec, In>()) return (end - begin) * sizeof(In);
    else {
      (void)begin;
      (void)end;
      return 0;
    }
  }
  void copyRawInputs(std::size_t begin, std::size_t end, std::byte* dst) const override {
    if constexpr (rawInputFor<Codec, In>()) std::memcpy(dst, window_.inputData(begin), (end - begin) * sizeof(In));
    else {
      (void)begin;
      (void)end;
      (void)dst;
    }
  }
  std::size_t encodeInputs(std::size_t begin, std::size_t end, ByteWriter& w, std::exception_ptr& error) override {
    if constexpr (rawInputFor<Codec, In>()) {
      w.write(window_.inputData(begin), (end - begin) * sizeof(In));
    } else {
      for (std::size_t i = begin; i < end; ++i) {
        const std::size_t mark = w.size();
        try {
          Codec::encode(w, window_.input(i));
        } catch (...) {
          w.buffer().resize(mark);
          error = std::current_exception();
          return i;
        }
      }
    }
    return end;
  }

private:
  F& fn_;
  StreamWindow<Codec, In, R>& window_;
};

/// What a Stream yields, by kind: values (throwing), outcomes, and both with their index.
enum class StreamKind { values, outcomes, indexedValues, indexedOutcomes };

template <StreamKind K, class R>
struct StreamItemOf;
template <class R>
struct StreamItemOf<StreamKind::values, R> {
  using type = std::conditional_t<std::is_void_v<R>, std::size_t, R>; // void: the input's index
};
template <class R>
struct StreamItemOf<StreamKind::outcomes, R> {
  using type = Outcome<R>;
};
template <class R>
struct StreamItemOf<StreamKind::indexedValues, R> {
  using type = std::conditional_t<std::is_void_v<R>, std::size_t, Indexed<R>>; // void: the index
};
template <class R>
struct StreamItemOf<StreamKind::indexedOutcomes, R> {
  using type = Indexed<Outcome<R>>;
};

/// A stream's producer, behind the type-erased Stream.
template <class T>
class StreamSource {
public:
  virtual ~StreamSource() = default;
  /// Append the next items (those ready now, at least one), or none at the end. Value streams
  /// throw TaskError at a failed input (after the items before it were given).
  virtual void next(std::vector<T>& out) = 0;
};

/// Where a stream's engine comes from: its own (one-shot) or a pool's, held for the stream's life.
class EngineLease {
public:
  virtual ~EngineLease() = default;
  virtual Engine& engine() noexcept = 0;
  virtual int closeFd() const noexcept { return -1; }
};

/// A one-shot stream's own engine: workers for the stream's life only.
class OwnEngine final : public EngineLease {
public:
  explicit OwnEngine(const Options& opts) : engine_(opts, Lifetime::pool) {}
  Engine& engine() noexcept override { return engine_; }

private:
  Engine engine_;
};

/// How a stream holds its range: a pointer to a range given as an lvalue (which must outlive the
/// stream, as any container iterated), the range itself when given as an rvalue. Not
/// std::views::all: Clang before 16 cannot instantiate libstdc++ 12's ref_view and owning_view.
template <class Range>
class HeldRange {
  static constexpr bool byReference = std::is_lvalue_reference_v<Range>;
  using Stored = std::conditional_t<byReference, std::remove_reference_t<Range>*, std::remove_cvref_t<Range>>;

public:
  explicit HeldRange(Range&& range) : stored_(hold(std::forward<Range>(range))) {}
  /// The range, to iterate.
  auto& get() noexcept {
    if constexpr (byReference) return *stored_;
    else return stored_;
  }

private:
  static Stored hold(Range&& range) {
    if constexpr (byReference) return std::addressof(range);
    else return Stored(std::forward<Range>(range));
  }
  Stored stored_;
};

/// The work of a stream: reads the range into the window as room allows, drives the engine, and
/// gives back results in input order (ordered) or as they complete. `Range` is the range's type
/// as given (an lvalue reference, or a type given as an rvalue).
template <StreamKind K, class Codec, class Range, class F, class In, class R, bool Inherited>
class StreamState final : public StreamSource<typename StreamItemOf<K, R>::type> {
  using Item = typename StreamItemOf<K, R>::type;
  static constexpr bool ordered = K == StreamKind::values || K == StreamKind::outcomes;

public:
  StreamState(std::unique_ptr<EngineLease> lease, Range&& range, const F& fn, const Options& opts, std::size_t capacity)
      : lease_(std::move(lease)), range_(std::forward<Range>(range)), fn_(fn), window_(capacity, ordered),
        job_(fn_, window_) {
    lease_->engine().open(job_, opts, lease_->closeFd(), true);
  }
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;
  /// A consumer that leaves early stops the rest (see Engine::stopEarly).
  ~StreamState() override { lease_->engine().stopEarly(std::chrono::milliseconds(200)); }

  void next(std::vector<Item>& out) override {
    constexpr bool valueKind = K == StreamKind::values || K == StreamKind::indexedValues;
    constexpr std::size_t chunk = 1024; // items per call: the virtual call and the checks amortise
    // The items given by the last call were all passed: the window counts from here. Items given
    // by this call stay counted until the next (they are held in `out`).
    const std::size_t heldFrom = base_;
    for (;;) {
      if constexpr (ordered) {
        while (out.size() < chunk && base_ < read_ && window_.isResolved(base_)) {
          if (valueKind && window_.failed(base_) && !out.empty()) break; // its TaskError comes next call
          out.push_back(deliver(base_++));
        }
      } else {
        while (out.size() < chunk) {
          auto i = window_.nextCompleted();
          if (!i) break;
          if (valueKind && window_.failed(*i) && !out.empty()) {
            window_.giveBackCompleted(*i);
            break;
          }
          out.push_back(deliver(*i));
          while (base_ < read_ && window_.isFree(base_)) ++base_;
        }
      }
      if (!out.empty()) {
        keepFed(heldFrom);
        return;
      }
      fill(base_);
      if (base_ == read_ && exhausted_) {
        while (lease_->engine().step()) {
        }
        return;
      }
      lease_->engine().step();
    }
  }

private:
  /// While the consumer takes results that are already in, the workers must not run dry: once
  /// half the window is free, read more and hand it out, and take in what the workers sent
  /// (without waiting).
  void keepFed(std::size_t heldFrom) {
    if (exhausted_ || heldFrom + window_.capacity() - read_ < window_.capacity() / 2) return;
    fill(heldFrom);
    lease_->engine().step(0);
  }

  /// Read inputs while the window has room (and the call goes on): up to `heldFrom` + capacity,
  /// where `heldFrom` is the first input whose item the consumer may not have passed yet.
  void fill(std::size_t heldFrom) {
    if (exhausted_) return;
    if (lease_->engine().gaveUp()) {
      // Cancelled, failFast, or out of restarts: the inputs not read are not part of the call.
      exhausted_ = true;
      lease_->engine().endOfInputs();
      return;
    }
    if (!started_) {
      it_.emplace(std::ranges::begin(range_.get()));
      started_ = true;
    }
    const std::size_t before = read_;
    // A slow range (a pipe, a generator that works) is handed out after a millisecond, so that
    // the workers start before the window is full.
    read_ = window_.read(*it_, std::ranges::end(range_.get()), read_, heldFrom + window_.capacity(),
                         std::chrono::steady_clock::now() + std::chrono::milliseconds(1));
    if (read_ > before) lease_->engine().extend(read_);
    if (*it_ == std::ranges::end(range_.get())) {
      exhausted_ = true;
      lease_->engine().endOfInputs();
    }
  }

  Item deliver(std::size_t index) {
    if constexpr (K == StreamKind::values || K == StreamKind::indexedValues)
      if (!window_.failed(index)) return deliverValue(index);
    Outcome<R> o = window_.take(index);
    if constexpr (K == StreamKind::outcomes) {
      return o;
    } else if constexpr (K == StreamKind::indexedOutcomes) {
      return Item{index, std::move(o)};
    } else {
      if (!o) {
        std::vector<Failure> failures{o.failure()};
        throw TaskError(std::move(failures), std::vector<Outcome<R>>{});
      }
      if constexpr (std::is_void_v<R>) return index;
      else if constexpr (K == StreamKind::values) return std::move(o.value());
      else return Item{index, std::move(o.value())};
    }
  }

  /// An item of a value stream (no failure at `index`): no Outcome is made.
  Item deliverValue(std::size_t index) {
    if constexpr (std::is_void_v<R>) {
      window_.takeValue(index);
      return index;
    } else if constexpr (K == StreamKind::values) {
      return window_.takeValue(index);
    } else {
      return Item{index, window_.takeValue(index)};
    }
  }

  std::unique_ptr<EngineLease> lease_;
  HeldRange<Range> range_;
  F fn_;
  StreamWindow<Codec, In, R> window_;
  StreamJob<Codec, F, In, R, Inherited> job_;
  std::optional<std::ranges::iterator_t<decltype(std::declval<HeldRange<Range>&>().get())>> it_;
  bool started_ = false;
  bool exhausted_ = false;
  std::size_t base_ = 0; // ordered: the next input to give back; unordered: the oldest not given back
  std::size_t read_ = 0; // inputs read from the range
};

} // namespace flockmp::detail
