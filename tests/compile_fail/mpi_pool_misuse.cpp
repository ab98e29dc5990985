// Misuse at an mpi::Pool call: the other ranks did not inherit the callable or the inputs, so the
// callable must be portable and the inputs codable. Each FLOCK_CASE_* must fail with exactly one
// readable error; FLOCK_CASE_mpi_pool_control must compile.
#include <flock/mpi.hpp>

#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  flockmp::mpi::Environment env(argc, argv);
  flockmp::mpi::Pool pool;
  if (!pool.isRoot()) return 0;
  std::vector<int> xs{1, 2, 3};
#if defined(FLOCK_CASE_mpi_pool_capture)
  int offset = 3;
  auto r = pool.apply(xs, [offset](int x) { return x + offset; });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_mpi_pool_uncodable_input)
  std::vector<std::unique_ptr<int>> ptrs;
  auto r = pool.tryApply(ptrs, [](const std::unique_ptr<int>& p) { return *p; });
  return static_cast<int>(r.size());
#elif defined(FLOCK_CASE_mpi_pool_control)
  struct Scale {
    int k = 2;
    int operator()(int x) const { return x * k; }
  };
  auto a = pool.apply(xs, [](int x) { return std::to_string(x); });
  auto b = pool.tryApply(xs, Scale{3});
  pool.apply(xs, [](int) {});
  return static_cast<int>(a.size() + b.size());
#endif
}
