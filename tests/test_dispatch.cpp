// The scheduling policy (detail/dispatch.hpp) alone, without a process: batch sizes, suspects,
// the attribution of a death to an input, retries and the restart budget.
#include <chrono>
#include <cstddef>
#include <deque>
#include <utility>
#include <vector>

#include <flock/detail/dispatch.hpp>

#include "catch.hpp"

using flockmp::detail::attributeDeath;
using flockmp::detail::Batch;
using flockmp::detail::Dispatch;
using flockmp::detail::idleAfter;
using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

TEST_CASE("a plain death is the running input's: the inputs before it that were not reported run again",
          "[dispatch][death]") {
  // Batch [0, 10) with 0..2 reported, the worker died in input 5: 3 and 4 finished but their
  // results were lost with the worker. Catches them being dropped, or 5 being run again.
  auto v = attributeDeath(std::deque<Batch>{{0, 10, 3}}, 5, false);
  REQUIRE(v.culprit);
  CHECK(*v.culprit == 5);
  CHECK(v.requeue == Ranges{{3, 5}, {6, 10}});
  CHECK(v.suspects.empty());
  // A second batch queued behind the running one runs again whole.
  v = attributeDeath(std::deque<Batch>{{0, 5, 2}, {5, 10, 5}}, 3, false);
  CHECK(*v.culprit == 3);
  CHECK(v.requeue == Ranges{{2, 3}, {4, 5}, {5, 10}});
}

TEST_CASE("a death between inputs has no culprit: everything it held runs again", "[dispatch][death]") {
  // Catches an idle worker's death (killed from outside) blamed on the last input it ran.
  auto v = attributeDeath(std::deque<Batch>{{10, 20, 10}}, idleAfter(9), false);
  CHECK_FALSE(v.culprit);
  CHECK(v.requeue == Ranges{{10, 20}});
  v = attributeDeath(std::deque<Batch>{{0, 4, 0}}, -1, false); // before its first input
  CHECK_FALSE(v.culprit);
  CHECK(v.requeue == Ranges{{0, 4}});
}

TEST_CASE("a broken channel makes suspects of the inputs that may have broken it, and spares those after",
          "[dispatch][death]") {
  // Unresolved from 4, last run 6: one of 4, 5, 6 broke it; 7..9 never ran.
  auto v = attributeDeath(std::deque<Batch>{{0, 10, 4}}, 6, true);
  CHECK_FALSE(v.culprit);
  CHECK(v.suspects == std::vector<std::size_t>{4, 5, 6});
  CHECK(v.requeue == Ranges{{7, 10}});
  // One candidate: it is the culprit (catches an innocent input reported instead).
  v = attributeDeath(std::deque<Batch>{{0, 10, 6}}, 6, true);
  REQUIRE(v.culprit);
  CHECK(*v.culprit == 6);
  CHECK(v.suspects.empty());
  CHECK(v.requeue == Ranges{{7, 10}});
  // Broken before any input of these batches ran (the initializer): nothing is suspect.
  v = attributeDeath(std::deque<Batch>{{0, 3, 0}, {3, 6, 3}}, -1, true);
  CHECK_FALSE(v.culprit);
  CHECK(v.suspects.empty());
  CHECK(v.requeue == Ranges{{0, 3}, {3, 6}});
}

TEST_CASE("guided batches shrink toward single inputs and respect batchSize and maxTasksPerWorker",
          "[dispatch][batches]") {
  Dispatch d;
  d.begin(1000, {2, 0, 0, 0, {}});
  Dispatch::WorkerView idle{};
  // ceil(1000 / (4 * 2)) = 125, then ceil(875 / 8) = 110: catches a policy that hands out equal
  // halves (an unbalanced end) or single inputs from the start (a wake-up per input).
  auto a = d.nextForIdle(idle);
  REQUIRE(a);
  CHECK((a->begin == 0 && a->end == 125));
  auto b = d.nextForIdle(idle);
  REQUIRE(b);
  CHECK((b->begin == 125 && b->end == 235));
  CHECK(d.unassigned() == 765);
  // Near the end, single inputs.
  Dispatch tail;
  tail.begin(3, {2, 0, 0, 0, {}});
  CHECK(tail.nextForIdle(idle)->end == 1);

  Dispatch fixed;
  fixed.begin(100, {2, 7, 0, 0, {}});
  CHECK(fixed.nextForIdle(idle)->end == 7); // batchSize wins over guided
  Dispatch capped;
  capped.begin(100, {2, 0, 10, 0, {}});
  // 8 of a worker's 10 served: at most 2 more; at 10 it gets nothing and is recycled.
  CHECK(capped.nextForIdle({8, 0, false, false})->end == 2);
  CHECK_FALSE(capped.nextForIdle({10, 0, false, false}));
  CHECK(capped.shouldRecycle({10, 0, false, false}));
  CHECK_FALSE(capped.shouldRecycle({10, 1, false, false})); // not while it holds a batch
}

TEST_CASE("a batch is queued ahead only when batches are short enough for the wake-up to show",
          "[dispatch][batches]") {
  Dispatch d;
  d.begin(100'000, {2, 0, 0, 0, {}});
  const Dispatch::WorkerView busy{0, 1, false, false};
  CHECK_FALSE(d.nextAhead(busy)); // nothing measured yet
  d.batchFinished(1000, 1000 * 100); // 100 ns per input: a batch takes far less than 2 ms
  CHECK(d.nextAhead(busy));
  Dispatch slow;
  slow.begin(100'000, {2, 0, 0, 0, {}});
  slow.batchFinished(10, 10 * 1'000'000); // 1 ms per input
  CHECK_FALSE(slow.nextAhead(busy));
  // Short inputs get batches of at least 200 us of work (catches a batch per input when the
  // guided size is small).
  Dispatch shortTail;
  shortTail.begin(100'000, {2, 0, 0, 0, {}});
  shortTail.batchFinished(1000, 1000 * 100);
  CHECK(shortTail.batchSize({}) >= 2000);
}

TEST_CASE("suspects run alone, before other work, on an idle worker", "[dispatch][death]") {
  Dispatch d;
  d.begin(10, {2, 0, 0, 0, {}});
  auto first = d.nextForIdle({});
  REQUIRE(first);
  CHECK(first->end == 2);
  flockmp::detail::DeathVerdict v;
  v.suspects = {0, 1};
  d.applyVerdict(v, false);
  CHECK(d.unassigned() == 10);
  CHECK_FALSE(d.nextForIdle({0, 1, false, false})); // a busy worker gets no suspect
  CHECK_FALSE(d.nextAhead({0, 1, false, false}));   // and nothing queued ahead meanwhile
  auto s = d.nextForIdle({});
  REQUIRE(s);
  CHECK((s->begin == 0 && s->end == 1 && s->suspect));
  CHECK(d.nextForIdle({})->suspect);
  auto next = d.nextForIdle({});
  REQUIRE(next);
  CHECK_FALSE(next->suspect);
  CHECK(next->begin == 2);
}

TEST_CASE("a culprit is retried up to `retries` times, after the inputs requeued with it, never for a corrupt "
          "channel",
          "[dispatch][retries]") {
  Dispatch d;
  d.begin(10, {1, 10, 0, 1, {}}); // one batch of all ten inputs
  REQUIRE(d.nextForIdle({})->end == 10);
  auto v = attributeDeath(std::deque<Batch>{{0, 10, 2}}, 4, false);
  CHECK(d.applyVerdict(v, true)); // first death of input 4: retried
  std::vector<std::pair<std::size_t, std::size_t>> order;
  d.drainUnassigned([&](std::size_t b, std::size_t e) { order.emplace_back(b, e); });
  CHECK(order == Ranges{{2, 4}, {5, 10}, {4, 5}});
  d.begin(10, {1, 10, 0, 1, {}});
  (void)d.nextForIdle({});
  CHECK(d.applyVerdict(v, true));
  CHECK_FALSE(d.applyVerdict(v, true)); // second death: reported (catches retrying forever)
  Dispatch p;
  p.begin(10, {1, 10, 0, 3, {}});
  (void)p.nextForIdle({});
  CHECK_FALSE(p.applyVerdict(v, false)); // a corrupt channel is not retried
}

TEST_CASE("the restart budget is spent by too many failed starts in its period, or in a row", "[dispatch][budget]") {
  using namespace std::chrono;
  const auto t0 = steady_clock::time_point{} + hours(1);
  Dispatch d;
  d.begin(1, {1, 0, 0, 0, {2, milliseconds(5000)}});
  CHECK_FALSE(d.noteFailedStart(t0));
  CHECK_FALSE(d.noteFailedStart(t0 + milliseconds(1)));
  CHECK(d.noteFailedStart(t0 + milliseconds(2))); // 3 > maxRestarts 2
  // Spread beyond the period, but with no input finished in between: still spent.
  Dispatch slow;
  slow.begin(1, {1, 0, 0, 0, {2, milliseconds(10)}});
  CHECK_FALSE(slow.noteFailedStart(t0));
  CHECK_FALSE(slow.noteFailedStart(t0 + seconds(1)));
  CHECK(slow.noteFailedStart(t0 + seconds(2)));
  // A finished input between failures resets the run (catches a budget that never forgives).
  Dispatch forgiving;
  forgiving.begin(1, {1, 0, 0, 0, {2, milliseconds(10)}});
  CHECK_FALSE(forgiving.noteFailedStart(t0));
  CHECK_FALSE(forgiving.noteFailedStart(t0 + seconds(1)));
  forgiving.noteFinished();
  CHECK_FALSE(forgiving.noteFailedStart(t0 + seconds(2)));
}

TEST_CASE("a stream's inputs join the queue as they are read, and no batch crosses its window's wrap",
          "[dispatch][stream]") {
  Dispatch d;
  d.begin(0, {1, 0, 0, 0, {}, 64});
  Dispatch::WorkerView idle{};
  CHECK_FALSE(d.hasWork());
  d.extend(0, 40);
  d.extend(40, 64); // contiguous: one range, so a batch may span both reads
  CHECK(d.unassigned() == 64);
  // Sized by time, not by what was read: 16 until a batch was timed; then about 1 ms of work
  // (10 us an input: 100), capped so that the worker can hold two batches of the 64-input window
  // (32); slow inputs (0.5 ms each, averaged in: 157 us): 6. Catches a stream sized by the
  // inputs read so far (tiny batches), or by time alone (a batch larger than the window).
  auto a = d.nextForIdle(idle);
  REQUIRE(a);
  CHECK((a->begin == 0 && a->end == 16));
  d.batchFinished(16, 16 * 10'000);
  auto b = d.nextForIdle(idle);
  REQUIRE(b);
  CHECK((b->begin == 16 && b->end == 48));
  d.batchFinished(32, 32 * 500'000);
  auto c = d.nextForIdle(idle);
  REQUIRE(c);
  CHECK((c->begin == 48 && c->end == 54));
  // Batches of 5 with a wrap at 16: [15, 20) is cut to [15, 16), and the next starts at 16.
  // Catches a batch whose inputs (and results) would wrap around the stream's ring.
  Dispatch w;
  w.begin(0, {1, 5, 0, 0, {}, 16});
  w.extend(0, 22);
  std::vector<std::pair<std::size_t, std::size_t>> cuts;
  while (auto x = w.nextForIdle(idle)) cuts.emplace_back(x->begin, x->end);
  CHECK(cuts == Ranges{{0, 5}, {5, 10}, {10, 15}, {15, 16}, {16, 21}, {21, 22}});
  // A later read that does not continue the last range (inputs given back meanwhile) is queued
  // on its own, after it.
  Dispatch h;
  h.begin(0, {1, 1, 0, 0, {}, 0});
  h.extend(0, 2);
  h.giveBack(7, 9);
  h.extend(2, 4);
  std::vector<std::size_t> order;
  while (auto x = h.nextForIdle(idle)) order.push_back(x->begin);
  CHECK(order == std::vector<std::size_t>{7, 8, 0, 1, 2, 3});
}
