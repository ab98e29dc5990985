// Misuse at the apply() call: a result type the codec cannot carry, or a callable that cannot
// take the inputs. Each FLOCK_CASE_* must fail with exactly one readable error naming the type;
// FLOCK_CASE_apply_control must compile.
#include <flock/flock.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

int main() {
  std::vector<int> xs{1, 2, 3};
#if defined(FLOCK_CASE_apply_string_view)
  auto r = flockmp::FunctionAsync::apply(xs, [](int) { return std::string_view("points into a worker"); });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_unique_ptr)
  auto r = flockmp::FunctionAsync::tryApply(xs, [](int x) { return std::make_unique<int>(x); });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_not_callable)
  auto r = flockmp::FunctionAsync::apply(xs, [](const std::string& s) { return s.size(); });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_control)
  auto r = flockmp::FunctionAsync::apply(xs, [](int x) { return std::to_string(x); });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_pool_capture)
  // A pool's worker did not inherit the captured state.
  flockmp::BaseMultiProc pool;
  int offset = 3;
  auto r = pool.apply(xs, [offset](int x) { return x + offset; });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_pool_uncodable_input)
  // A pool's inputs travel through the codec.
  flockmp::BaseMultiProc pool;
  std::vector<std::unique_ptr<int>> ptrs;
  auto r = pool.apply(ptrs, [](const std::unique_ptr<int>& p) { return *p; });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_pool_uncodable_object)
  // The object of a member function travels through the codec.
  struct Holder {
    std::unique_ptr<int> p;
    int get(int x) const { return x + *p; }
  };
  flockmp::BaseMultiProc pool;
  auto r = pool.apply(xs, &Holder::get, Holder{});
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_apply_pool_control)
  // Every portable form compiles.
  struct Scale {
    int k = 2;
    int operator()(int x) const { return x * k; }
  };
  struct Base {
    int b = 1;
    int add(int x) const { return x + b; }
  };
  flockmp::BaseMultiProc pool;
  auto a = pool.apply(xs, [](int x) { return x + 1; });
  auto b = pool.apply(xs, Scale{});
  auto c = pool.tryApply(xs, &Base::add, Base{});
  auto d = pool.apply(std::vector<std::string>{"a"}, [](const std::string& s) { return s.size(); });
  return static_cast<int>(a.size() + b.size() + c.size() + d.size());
#elif defined(FLOCK_CASE_apply_stream_uncodable_input)
  // A stream's inputs are read after its workers started: they travel through the codec, even
  // one-shot under Context::fork.
  std::vector<std::unique_ptr<int>> ptrs;
  int n = 0;
  for (int v : flockmp::FunctionAsync::imap(ptrs, [](const std::unique_ptr<int>& p) { return *p; })) n += v;
  return n;
#elif defined(FLOCK_CASE_apply_submit_capture)
  // submit's workers did not inherit the captured state.
  flockmp::BaseMultiProc pool;
  int offset = 3;
  auto f = pool.submit([offset](int x) { return x + offset; }, 1);
  return f.get();
#elif defined(FLOCK_CASE_apply_mapreduce_bad_reduce)
  // reduce(acc, result) must give back an accumulator.
  auto total = flockmp::FunctionAsync::mapReduce(xs, [](int x) { return x; }, [](int, int) { return std::string("no"); }, 0);
  return total;
#elif defined(FLOCK_CASE_apply_stream_control)
  // Every streaming and async form compiles with portable callables and codable types.
  flockmp::BaseMultiProc pool;
  int offset = 1;
  long sum = 0;
  for (int v : flockmp::FunctionAsync::imap(xs, [offset](int x) { return x + offset; })) sum += v; // fork: inherited
  for (const auto& o : pool.tryImap(xs, [](int x) { return x * 2; })) sum += *o;
  for (const auto& [i, v] : pool.imapUnordered(xs, [](int x) { return x; })) sum += v + static_cast<long>(i);
  sum += pool.mapReduce(xs, [](int x) { return x; }, [](int a, int b) { return a + b; }, 0);
  auto f = pool.submit([](int a, int b) { return a * b; }, 2, 3);
  auto c = pool.applyAsync(xs, [](int x) { return std::to_string(x); });
  sum += f.get() + static_cast<long>(c.get().size());
  return static_cast<int>(sum);
#else
#error "no FLOCK_CASE_* defined"
#endif
}
