// flock internals: the scheduling policy of a call, with no system call in it (unit-tested
// without forking). It decides batch sizes, which inputs a worker gets next, what a worker's death
// means for the inputs it held, when an input is tried again, and when the restart budget is spent.
#pragma once

#include "config.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "../options.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <algorithm>
#include <deque>
#include <unordered_map>
#endif

namespace flockmp::detail {

/// Consecutive inputs handed to one worker: [begin, next) resolved, [next, end) outstanding.
struct Batch {
  std::size_t begin = 0, end = 0, next = 0;
  bool suspect = false; ///< a single input that may have broken a channel, run alone
  int area = -1;             ///< the worker's shared area this batch uses (pools), or -1
  std::size_t resultOffset = 0; ///< where in the shared region its raw results go (0: not there)
};

/// The value of WorkerControl::current between batches, once input `last` has run.
constexpr std::int64_t idleAfter(std::size_t last) noexcept { return -2 - static_cast<std::int64_t>(last); }

/// The input a worker runs or ran last, from WorkerControl::current; nullopt before any.
constexpr std::optional<std::size_t> lastInputOf(std::int64_t current) noexcept {
  if (current >= 0) return static_cast<std::size_t>(current);
  if (current <= -2) return static_cast<std::size_t>(-2 - current);
  return std::nullopt;
}

/// What a worker's death means for the inputs it held.
struct DeathVerdict {
  std::optional<std::size_t> culprit;                         ///< the input that killed it
  std::vector<std::pair<std::size_t, std::size_t>> requeue;   ///< ranges to run again, in order
  std::vector<std::size_t> suspects;                          ///< inputs to run alone, one of which broke the channel
};

/// Attributes a death. `outstanding`: the batches the worker held; `current`: its
/// WorkerControl::current; `channelBroken`: it sent corrupt bytes, or a task closed or replaced
/// its channel.
///
/// A plain death (crash, timeout, exit) happened in the input `current` names: that input is the
/// culprit, the others run again. A broken channel was broken by an input that has run or is
/// running and whose result has not arrived: one of the inputs from the first unresolved one to
/// the last one run. With one such input, that is the culprit; with several, each runs again
/// alone until the culprit shows. The inputs after the last one run are innocent.
FLOCK_ENGINE_INLINE DeathVerdict attributeDeath(const std::deque<Batch>& outstanding,
                                                std::int64_t current, bool channelBroken);

/// The scheduling state of one call.
class Dispatch {
  using Clock = std::chrono::steady_clock;

public:
  struct Config {
    std::size_t workers = 1;
    std::size_t batchSize = 0;         ///< Options::batchSize (0: guided)
    std::size_t maxTasksPerWorker = 0; ///< Options::maxTasksPerWorker (0: no limit)
    int retries = 0;                   ///< Options::retries
    RestartBudget budget{};
    /// Streams: batches never cross a multiple of this (their inputs and results then sit
    /// contiguously in the stream's ring buffers). 0: no boundary.
    std::size_t wrap = 0;
  };

  /// A worker as the policy sees it.
  struct WorkerView {
    std::size_t assigned = 0;  ///< inputs handed to it over its life
    std::size_t inFlight = 0;  ///< batches it holds
    bool frontSuspect = false; ///< the batch it runs is a suspect
    bool stopping = false;     ///< asked to stop
  };

  /// A new call of `n` inputs; every input is unassigned.
  void begin(std::size_t n, const Config& config);

  /// A stream read inputs [end, newEnd): they are unassigned now.
  void extend(std::size_t end, std::size_t newEnd);

  [[nodiscard]] bool hasWork() const noexcept { return !queue_.empty() || !suspects_.empty(); }
  [[nodiscard]] std::size_t unassigned() const noexcept { return unassigned_; }
  [[nodiscard]] double nsPerItem() const noexcept { return nsPerItem_; }

  /// Inputs in the next batch for a worker: guided (large batches first, single inputs at the
  /// end), but never so short that the ~40 us wake-up of a worker dominates (measured per input
  /// from finished batches); never past maxTasksPerWorker.
  [[nodiscard]] std::size_t batchSize(const WorkerView& w) const noexcept;

  /// True when the worker may take more inputs over its life.
  [[nodiscard]] bool hasRoom(const WorkerView& w) const noexcept {
    return !w.stopping && (config_.maxTasksPerWorker == 0 || w.assigned < config_.maxTasksPerWorker);
  }

  /// True when the worker has served its maxTasksPerWorker and holds nothing: stop it.
  [[nodiscard]] bool shouldRecycle(const WorkerView& w) const noexcept {
    return config_.maxTasksPerWorker > 0 && !w.stopping && w.inFlight == 0 && w.assigned >= config_.maxTasksPerWorker;
  }

  /// The batch an idle worker gets now, if any. A suspect runs alone on a worker with nothing
  /// else in flight, so that if the channel breaks again, the input that broke it is known.
  std::optional<Batch> nextForIdle(const WorkerView& w);

  /// A second batch queued behind the one a worker runs, when batches are short enough that the
  /// ~40 us wake-up between them would show (so the worker never waits for the parent). Long
  /// batches are not queued ahead: that would unbalance the end.
  std::optional<Batch> nextAhead(const WorkerView& w);

  /// Inputs [begin, end) taken but not sent go back to the front of the queue.
  void giveBack(std::size_t begin, std::size_t end);

  /// A batch of `items` inputs took `ns` in its worker: the per-input estimate follows.
  void batchFinished(std::size_t items, std::uint64_t ns) noexcept;

  /// A death's verdict: the culprit is tried again when retries allow (true) and `retryable`
  /// (a corrupt channel is not: the input would break the next worker's too); its ranges and
  /// suspects go back to the front of the queue, in order.
  bool applyVerdict(const DeathVerdict& v, bool retryable);

  /// A worker ended (or could not start) without finishing any input. True when that spends the
  /// restart budget: more than maxRestarts such ends within the period, or in a row with no input
  /// finished in between (workers that fail slowly).
  bool noteFailedStart(Clock::time_point now);

  /// An input finished: failing starts are no longer "in a row".
  void noteFinished() noexcept { failedInARow_ = 0; }

  /// How many failed starts the budget holds now (for the message that ends a call).
  [[nodiscard]] std::size_t failedStarts() const noexcept { return std::max(restartTimes_.size(), failedInARow_); }

  /// Hands every unassigned input to `f(begin, end)` and forgets it (a call that ends early).
  template <class F>
  void drainUnassigned(F&& f) {
    for (auto [b, e] : queue_) f(b, e);
    for (std::size_t k : suspects_) f(k, k + 1);
    queue_.clear();
    suspects_.clear();
    unassigned_ = 0;
  }

private:
  std::optional<Batch> take(const WorkerView& w);

  Config config_{};
  std::deque<std::pair<std::size_t, std::size_t>> queue_;
  std::deque<std::size_t> suspects_; // inputs to run alone, one of which broke a channel
  std::size_t unassigned_ = 0;
  double nsPerItem_ = 0;
  std::unordered_map<std::size_t, int> attempts_;
  std::deque<Clock::time_point> restartTimes_;
  std::size_t failedInARow_ = 0; // workers that ended or failed to start with no input finished since
};

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE DeathVerdict attributeDeath(const std::deque<Batch>& outstanding,
                                                std::int64_t current, bool channelBroken) {
  DeathVerdict v;
  if (channelBroken) {
    const auto last = lastInputOf(current);
    const auto holdsLast = [&](const Batch& b) { return last && *last >= b.next && *last < b.end; };
    bool past = std::none_of(outstanding.begin(), outstanding.end(), holdsLast);
    for (const auto& b : outstanding) {
      if (past) {
        if (b.next < b.end) v.requeue.emplace_back(b.next, b.end);
        continue;
      }
      const std::size_t stop = holdsLast(b) ? *last + 1 : b.end;
      for (std::size_t k = b.next; k < stop; ++k) v.suspects.push_back(k);
      if (stop < b.end) v.requeue.emplace_back(stop, b.end);
      past = holdsLast(b);
    }
    if (v.suspects.size() == 1) {
      v.culprit = v.suspects.front();
      v.suspects.clear();
    }
    return v;
  }
  const auto runningIn = [&](const Batch& b) {
    return current >= 0 && static_cast<std::size_t>(current) >= b.next && static_cast<std::size_t>(current) < b.end;
  };
  for (const auto& b : outstanding) {
    if (runningIn(b)) {
      const auto c = static_cast<std::size_t>(current);
      if (c > b.next) v.requeue.emplace_back(b.next, c); // finished, but the results were not sent: run again
      v.culprit = c;
      if (c + 1 < b.end) v.requeue.emplace_back(c + 1, b.end);
    } else if (b.next < b.end) {
      v.requeue.emplace_back(b.next, b.end);
    }
  }
  return v;
}

FLOCK_ENGINE_INLINE void Dispatch::begin(std::size_t n, const Config& config) {
  config_ = config;
  queue_.clear();
  suspects_.clear();
  if (n > 0) queue_.emplace_back(0, n);
  unassigned_ = n;
  nsPerItem_ = 0;
  attempts_.clear();
  restartTimes_.clear();
  failedInARow_ = 0;
}

FLOCK_ENGINE_INLINE void Dispatch::extend(std::size_t end, std::size_t newEnd) {
  if (newEnd <= end) return;
  if (!queue_.empty() && queue_.back().second == end) queue_.back().second = newEnd;
  else queue_.emplace_back(end, newEnd);
  unassigned_ += newEnd - end;
}

FLOCK_ENGINE_INLINE std::size_t Dispatch::batchSize(const WorkerView& w) const noexcept {
  std::size_t size;
  if (config_.batchSize > 0) {
    size = config_.batchSize;
  } else if (config_.wrap > 0) {
    // A stream: what is unassigned is only what was read so far, so batches are sized by
    // time: about a millisecond of work (16 inputs until a batch was timed), and no more than
    // lets every worker hold two batches in the window.
    size = nsPerItem_ > 0 ? static_cast<std::size_t>(1e6 / nsPerItem_) : 16;
    size = std::min(size, config_.wrap / (2 * std::max<std::size_t>(config_.workers, 1)));
  } else {
    const std::size_t parts = 4 * std::max<std::size_t>(config_.workers, 1);
    size = (unassigned_ + parts - 1) / parts;
    if (nsPerItem_ > 0) size = std::max(size, static_cast<std::size_t>(200'000.0 / nsPerItem_));
  }
  if (config_.maxTasksPerWorker > 0)
    size =
        std::min(size, config_.maxTasksPerWorker - std::min(w.assigned, config_.maxTasksPerWorker));
  return std::max<std::size_t>(size, 1);
}

FLOCK_ENGINE_INLINE std::optional<Batch> Dispatch::nextForIdle(const WorkerView& w) {
  if (!hasRoom(w) || w.inFlight != 0) return std::nullopt;
  if (!suspects_.empty()) {
    const std::size_t k = suspects_.front();
    suspects_.pop_front();
    --unassigned_;
    return Batch{k, k + 1, k, true};
  }
  return take(w);
}

FLOCK_ENGINE_INLINE std::optional<Batch> Dispatch::nextAhead(const WorkerView& w) {
  if (!hasRoom(w) || w.inFlight != 1 || w.frontSuspect || !suspects_.empty() || nsPerItem_ <= 0)
    return std::nullopt;
  if (nsPerItem_ * static_cast<double>(batchSize(w)) >= 2e6) return std::nullopt;
  return take(w);
}

FLOCK_ENGINE_INLINE void Dispatch::giveBack(std::size_t begin, std::size_t end) {
  if (begin >= end) return;
  queue_.emplace_front(begin, end);
  unassigned_ += end - begin;
}

FLOCK_ENGINE_INLINE void Dispatch::batchFinished(std::size_t items, std::uint64_t ns) noexcept {
  if (items == 0 || ns == 0) return;
  const double per = static_cast<double>(ns) / static_cast<double>(items);
  nsPerItem_ = nsPerItem_ == 0 ? per : 0.7 * nsPerItem_ + 0.3 * per;
}

FLOCK_ENGINE_INLINE bool Dispatch::applyVerdict(const DeathVerdict& v, bool retryable) {
  bool retried = false;
  auto requeue = v.requeue;
  if (v.culprit && retryable) {
    int& tries = attempts_[*v.culprit];
    if (tries < config_.retries) {
      ++tries;
      requeue.emplace_back(*v.culprit, *v.culprit + 1);
      retried = true;
    }
  }
  for (auto it = requeue.rbegin(); it != requeue.rend(); ++it) {
    queue_.push_front(*it);
    unassigned_ += it->second - it->first;
  }
  for (auto it = v.suspects.rbegin(); it != v.suspects.rend(); ++it) suspects_.push_front(*it);
  unassigned_ += v.suspects.size();
  return retried;
}

FLOCK_ENGINE_INLINE bool Dispatch::noteFailedStart(Clock::time_point now) {
  restartTimes_.push_back(now);
  while (!restartTimes_.empty() && now - restartTimes_.front() > config_.budget.period)
    restartTimes_.pop_front();
  ++failedInARow_;
  const auto limit = static_cast<std::size_t>(std::max(config_.budget.maxRestarts, 0));
  return restartTimes_.size() > limit || failedInARow_ > limit;
}

FLOCK_ENGINE_INLINE std::optional<Batch> Dispatch::take(const WorkerView& w) {
  if (queue_.empty()) return std::nullopt;
  auto& [b, e] = queue_.front();
  std::size_t n = std::min(batchSize(w), e - b);
  if (config_.wrap > 0) n = std::min(n, config_.wrap - b % config_.wrap);
  Batch batch{b, b + n, b};
  b += n;
  if (b == e) queue_.pop_front();
  unassigned_ -= n;
  return batch;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
