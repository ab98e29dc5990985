// Insights: what happened in a call, per worker and for the call, printed as a table and as JSON.
#include <flock/flock.hpp>

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

int main() {
  std::vector<int> xs(1000);
  for (int i = 0; i < 1000; ++i) xs[i] = i;

  flockmp::Insights insights;
  auto outcomes = flockmp::FunctionAsync::tryApply(
      xs,
      [](int x) {
        if (x % 100 == 99) std::this_thread::sleep_for(std::chrono::milliseconds(x / 10)); // a few slow ones
        if (x == 500) throw std::invalid_argument("no 500");
        return std::string(static_cast<std::size_t>(x), '*');
      },
      {.poolSize = 3, .insights = &insights});

  fmt::print("{} outcomes\n{}", outcomes.size(), insights);
  fmt::print("JSON: {}...\n", insights.toJson().substr(0, 120));
}
