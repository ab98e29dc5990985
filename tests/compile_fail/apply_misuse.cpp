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
#else
#error "no FLOCK_CASE_* defined"
#endif
}
