// The seed's "Database dependent functions" example, on embedded SQLite: every worker opens its
// connections once (here two databases: the shop and an audit log) and reuses them for every
// input it runs. On a terminal, a progress bar shows on stderr while it runs.
#include <flock/sqlite.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

using flockmp::sqlite::Connection;
namespace fs = std::filesystem;

int main() {
  // A temporary directory for the two database files.
  std::string tmp = (fs::temp_directory_path() / "flock-example-XXXXXX").string();
  if (::mkdtemp(tmp.data()) == nullptr) return 1;
  const std::string shop = tmp + "/shop.db", audit = tmp + "/audit.db";
  {
    Connection db(shop, {.wal = true});
    db.exec("create table orders(customer integer, amount integer)");
    for (int c = 1; c <= 40; ++c)
      for (int k = 1; k <= 3; ++k) db.exec("insert into orders values(?, ?)", c, c * 10 + k);
    Connection log(audit, {.wal = true});
    log.exec("create table connections(worker integer); create table audit(customer integer, "
             "worker integer)");
  }

  // Two setups: the ready-made one for the shop, and one of our own that records each connection
  // it opens, to show that every worker opens it exactly once.
  auto shopSetup = flockmp::sqlite::setup("sqlite_con", shop);
  flockmp::DatabaseSetup auditSetup{"audit_con",
                                    [](const flockmp::Parameters& p) {
                                      Connection c(p.at("path"));
                                      c.exec("insert into connections values(?)", static_cast<int>(::getpid()));
                                      return c;
                                    },
                                    flockmp::Parameters{{"path", audit}}};

  flockmp::DatabaseAsync dbAsync{{.poolSize = 3}, shopSetup, auditSetup};
  std::vector<int> customers;
  for (int c = 1; c <= 40; ++c) customers.push_back(c);

  // The connections come after the input, in setup order.
  auto totals =
      dbAsync.apply(customers, [](int customer, Connection& sqlite_con, Connection& audit_con) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20)); // some real work
        auto total =
            sqlite_con.scalar<long>("select sum(amount) from orders where customer = ?", customer);
        audit_con.exec("insert into audit values(?, ?)", customer, static_cast<int>(::getpid()));
        return total;
      });

  fmt::print("first totals: {}\n", std::vector<long>(totals.begin(), totals.begin() + 5));
  Connection log(audit);
  const auto workers = log.scalar<int>("select count(distinct worker) from audit");
  const auto opened = log.scalar<int>("select count(*) from connections");
  fmt::print("workers: {}, connections opened: {} ({})\n", workers, opened,
             opened == workers ? "one per worker" : "NOT one per worker");
  const auto rows = log.scalar<int>("select count(*) from audit");
  const auto distinct = log.scalar<int>("select count(distinct customer) from audit");
  fmt::print("audit rows: {}, each input once: {}\n", rows, rows == 40 && distinct == 40);

  // A database that cannot be opened: every input is reported with the setup's name.
  flockmp::DatabaseAsync broken{{.poolSize = 2, .pool = {.restartBudget = {.maxRestarts = 2}}},
                                flockmp::sqlite::setup("sqlite_con", tmp + "/missing/dir/shop.db")};
  try {
    broken.apply(customers, [](int c, Connection&) { return c; });
  } catch (const flockmp::TaskError& e) {
    fmt::print("broken setup: {} inputs failed, first: {}\n", e.failures().size(),
               flockmp::toString(e.failures()[0].kind));
    // The message says why the call gave up, and ends with the worker's SetupError.
    fmt::print("  {}\n", e.failures()[0].message);
  }
  fs::remove_all(tmp);
}
