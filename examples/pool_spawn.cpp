// A persistent pool under Context::spawn. Each worker is a fresh run of this program
// (/proc/self/exe, started with posix_spawn); flockmp::init, the first statement of main, turns
// it into a worker before main's own code runs. A spawned worker shares nothing with this
// process: not its memory, threads, locks or open files. Starting one costs a program start
// (about a millisecond or two), the same whether this process holds 10 MB or 10 GB.
//
// Everything a call needs therefore travels: here a member function with the object it runs on
// (a codable configuration), and inputs that are plain structs.
#include <flock/flock.hpp>

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <vector>

// An input: a plain struct, which the codec carries field by field.
struct Order {
  std::string item;
  int quantity = 0;
  double unitPrice = 0;
};

// The configuration of the work, sent to the workers with each call.
struct Invoicer {
  std::string currency;
  double taxRate = 0;

  std::string line(const Order& o) const {
    if (o.quantity <= 0) throw std::invalid_argument(fmt::format("{}: quantity {}", o.item, o.quantity));
    const double total = o.quantity * o.unitPrice * (1 + taxRate);
    return fmt::format("{:>3} x {:<10} {:>9.2f} {}", o.quantity, o.item, total, currency);
  }
};

// Set by main after flockmp::init: a spawned worker never runs that code, so it sees 0 here.
int configuredInMain = 0;

int main(int argc, char** argv) {
  flockmp::init(argc, argv); // first: in a spawned worker it serves the pool and never returns
  configuredInMain = 42;

  const std::vector<Order> orders = {
      {"keyboard", 2, 49.90}, {"monitor", 1, 219.00}, {"cable", 5, 4.50}, {"webcam", 0, 59.00}, {"dock", 1, 129.00},
  };

  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = flockmp::Context::spawn}};
  pool.start(); // optional: start the workers now rather than at the first call

  // tryApply never throws for a failed input: one Outcome per order, in order.
  const Invoicer eur{.currency = "EUR", .taxRate = 0.20};
  for (const auto& outcome : pool.tryApply(orders, &Invoicer::line, eur)) {
    if (outcome) fmt::print("{}\n", *outcome);
    else fmt::print("rejected: {}\n", outcome.failure().describe());
  }

  // The same workers, another configuration; only the valid orders this time, with apply.
  const std::vector<Order> valid = {orders[0], orders[1]};
  const Invoicer usd{.currency = "USD", .taxRate = 0.0};
  for (const auto& line : pool.apply(valid, &Invoicer::line, usd)) fmt::print("{}\n", line);

  // A captureless lambda reads the worker's own copy of the global: the program's initial value.
  const std::vector<int> seen = pool.apply(std::vector<int>{0}, [](int) { return configuredInMain; });
  fmt::print("configuredInMain: {} here, {} in a spawned worker\n", configuredInMain, seen[0]);
}
