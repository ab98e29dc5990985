// flockmp::currentInput(): in every worker it is the index of the input being run, whatever the
// call form and context, batches and retries included; outside an input it is empty.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <ranges>
#include <string>
#include <vector>

#include <flock/database.hpp>
#include <flock/dataframe.hpp>
#include <flock/flock.hpp>

#include "catch.hpp"
#include "support/deadlock_guard.hpp"
#include "support/test_util.hpp"

using flockmp::Context;
using flockmp::test::nameOf;

namespace {

#if defined(FLOCK_TEST_UNDER_SANITIZER)
constexpr int scale = 5;
#else
constexpr int scale = 1;
#endif

/// The index currentInput() gives, or -1 when it gives nothing.
long seen() {
  const auto i = flockmp::currentInput();
  return i ? static_cast<long>(*i) : -1L;
}
long seenFor(int) { return seen(); }
/// The same, through an encoded (not raw) result.
std::string seenText(int) { return std::to_string(seen()); }
/// 0 when currentInput() equals the input (inputs are their own indices), else a large number.
long mismatch(int x) { return seen() == x ? 0L : 1'000'000L; }
long plus(long a, long b) { return a + b; }
long submitted(int, int) { return seen(); }

/// Every result must be its own index: catches a currentInput() that is empty, stale (the
/// previous input, the first of its batch), or an index of another numbering.
template <class Values>
void checkIndices(const Values& values, std::size_t n) {
  REQUIRE(values.size() == n);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (static_cast<long>(values[i]) != static_cast<long>(i)) ++wrong;
  CHECK(wrong == 0);
}

/// Input 7's first attempt kills its worker (after creating `marker`); its retry, on another
/// worker, returns the index. Carried to pool workers by the codec (an aggregate).
struct CrashOnceAtSeven {
  std::string marker;
  long operator()(int x) const {
    if (x == 7 && !std::filesystem::exists(marker)) {
      std::ofstream(marker) << "ran";
      ::_exit(3);
    }
    return seen();
  }
};

/// A draw from a generator seeded by the input's index: the same whichever worker runs it.
std::uint64_t seededDraw(int) {
  std::mt19937_64 rng(12345 + *flockmp::currentInput());
  return rng();
}

} // namespace

TEST_CASE("currentInput is empty outside a worker, in the parent while a call runs, and in an initializer",
          "[current_input]") {
  flockmp::test::DeadlockGuard guard;
  // Bug caught: a value left set in the parent (or set before any call).
  CHECK_FALSE(flockmp::currentInput().has_value());
  bool progressCalled = false;
  bool parentSawIndex = false;
  const int n = 2000;
  const auto r = flockmp::FunctionAsync::apply(
      flockmp::test::range(n), seenFor,
      {.poolSize = 2,
       // Bug caught: the initializer (which runs before any input) seeing an index.
       .initializer = [] { if (flockmp::currentInput()) throw std::runtime_error("currentInput set in an initializer"); },
       .onProgress = [&](const flockmp::Progress&) {
         progressCalled = true;
         if (flockmp::currentInput()) parentSawIndex = true;
       }});
  checkIndices(r, static_cast<std::size_t>(n));
  CHECK(progressCalled); // the final report is always made: the check above did run
  CHECK_FALSE(parentSawIndex); // Bug caught: the parent's onProgress seeing a worker's index
  CHECK_FALSE(flockmp::currentInput().has_value()); // Bug caught: set in the parent by the call
}

#if FLOCK_TEST_STD_VIEWS
TEST_CASE("currentInput is the input's index in one-shot calls: apply, tryApply, ListAsync, imap, mapReduce",
          "[current_input]") {
  flockmp::test::DeadlockGuard guard;
  const auto batch = GENERATE(std::size_t{0}, std::size_t{1}, std::size_t{37});
  CAPTURE(batch);
  const int n = 20000 / scale;
  const auto xs = flockmp::test::range(n);
  const flockmp::Options o{.poolSize = 3, .batchSize = batch};
  // Raw results (longs) and encoded ones (strings) take different paths in the worker.
  checkIndices(flockmp::FunctionAsync::apply(xs, seenFor, o), xs.size());
  std::vector<long> fromText;
  for (const auto& s : flockmp::ListAsync::apply(xs, seenText, o)) fromText.push_back(std::stol(s));
  checkIndices(fromText, xs.size());
  std::vector<long> tried;
  for (const auto& out : flockmp::FunctionAsync::tryApply(xs, seenFor, o)) tried.push_back(out ? *out : -2);
  checkIndices(tried, xs.size());
  // A stream: the index is the position in the (single-pass) range.
  std::vector<long> streamed;
  for (long v : flockmp::FunctionAsync::imap(std::views::iota(0, n), seenFor, o)) streamed.push_back(v);
  checkIndices(streamed, xs.size());
  // Bug caught: mapReduce's fold loop not recording the index (each mismatch adds a million).
  CHECK(flockmp::FunctionAsync::mapReduce(xs, mismatch, plus, 0L, o) == 0);
}
#endif

TEST_CASE("currentInput in DataFrameAsync is the row (row-like) or the chunk (block-like)", "[current_input]") {
  flockmp::test::DeadlockGuard guard;
  std::vector<std::int64_t> values(500);
  const flockmp::DataFrame df{{"x", values}};
  const auto rows = flockmp::DataFrameAsync::apply(df, [](const flockmp::Row& row) {
    return static_cast<std::int64_t>(seen()) - static_cast<std::int64_t>(row.index());
  }, {.chunksize = 7, .poolSize = 2});
  REQUIRE(rows.size() == 500);
  for (const auto d : rows) CHECK(d == 0); // Bug caught: a row seeing another row's index
  const auto chunks = flockmp::DataFrameAsync::applyBlocks(std::vector<int>(100), [](const std::vector<int>&) {
    return seen();
  }, {.chunksize = 9, .poolSize = 2});
  checkIndices(chunks, 9); // Bug caught: a chunk seeing a row index or nothing
}

TEST_CASE("currentInput in DatabaseAsync is the input's index", "[current_input][database]") {
  flockmp::test::DeadlockGuard guard;
  flockmp::DatabaseAsync db{{.poolSize = 2}, flockmp::DatabaseSetup{"n", [] { return 3; }}};
  // Bug caught: the connection-passing path not recording the index.
  checkIndices(db.apply(flockmp::test::range(3000 / scale), [](int, int&) { return seen(); }), 3000 / scale);
}

TEST_CASE("currentInput is the input's index in a pool's calls under every context, retries included",
          "[current_input][pool]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const int n = 5000 / scale;
  const auto xs = flockmp::test::range(n);
  for (std::size_t batch : {std::size_t{0}, std::size_t{1}, std::size_t{64}}) {
    CAPTURE(batch);
    checkIndices(pool.apply(xs, seenFor, {.batchSize = batch}), xs.size());
    std::vector<long> fromText;
    for (const auto& s : pool.apply(xs, seenText, {.batchSize = batch})) fromText.push_back(std::stol(s));
    checkIndices(fromText, xs.size());
  }
  std::vector<long> streamed;
  for (long v : pool.imap(xs, seenFor)) streamed.push_back(v);
  checkIndices(streamed, xs.size());
  std::vector<long> unordered(xs.size(), -3);
  for (auto [i, v] : pool.imapUnordered(xs, seenFor)) unordered[i] = v;
  checkIndices(unordered, xs.size());
  CHECK(pool.mapReduce(xs, mismatch, plus, 0L) == 0);
  // Bug caught: the index between calls left at the last input of the previous call.
  CHECK_FALSE(flockmp::currentInput().has_value());
}

TEST_CASE("currentInput of a retried input is its own index", "[current_input][retries]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::test::TempDir tmp("flock-current-input");
  const CrashOnceAtSeven task{(tmp.path / "seven").string()};
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  const auto r = pool.apply(flockmp::test::range(40), task, {.batchSize = 4, .retries = 1});
  CHECK(std::filesystem::exists(task.marker)); // the first attempt did die
  checkIndices(r, 40);                         // Bug caught: a retry numbered afresh
}

TEST_CASE("currentInput in applyAsync is the index in its items; in submit it is 0", "[current_input][async]") {
  const auto context = GENERATE(Context::fork, Context::forkserver, Context::spawn);
  CAPTURE(nameOf(context));
  flockmp::test::DeadlockGuard guard;
  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = context}};
  // Two handles share one index space inside the pool: the second's items must still count
  // from 0 (bug caught: the pool's internal index leaking out).
  auto first = pool.applyAsync(flockmp::test::range(300), seenFor);
  auto one = pool.submit(submitted, 1, 2);
  auto second = pool.applyAsync(flockmp::test::range(500), seenFor);
  checkIndices(first.get(), 300);
  checkIndices(second.get(), 500);
  CHECK(one.get() == 0);
}

TEST_CASE("seeding from currentInput gives the same draws whatever the pool size (the fork pitfall solved)",
          "[current_input][readme]") {
  flockmp::test::DeadlockGuard guard;
  const auto xs = flockmp::test::range(3000);
  const auto one = flockmp::FunctionAsync::apply(xs, seededDraw, {.poolSize = 1});
  const auto three = flockmp::FunctionAsync::apply(xs, seededDraw, {.poolSize = 3, .batchSize = 5});
  // Bug caught: a draw that depends on which worker ran the input, or in what order.
  CHECK(one == three);
  // And the draws do differ by input (a constant seed would pass the check above).
  CHECK(one[0] != one[1]);
  CHECK(std::set<std::uint64_t>(one.begin(), one.end()).size() == one.size());
}
