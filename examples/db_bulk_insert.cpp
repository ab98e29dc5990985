// Writing many rows through DatabaseAsync: 100,000 rows into one SQLite file from parallel
// workers, one transaction per batch (DatabaseOptions::batchTransactions), with the settings an
// SQLite bulk load wants set on each connection as it opens (OpenOptions::onOpen). For scale, the
// same kind of write with every row committed on its own is timed on a few rows.
//
//   build/examples/db_bulk_insert [rows]      # default 100000
#include <flock/sqlite.hpp>

#include <fmt/core.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

using flockmp::sqlite::Connection;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

/// The task: compute a row from the input and insert it through the worker's connection (its
/// prepared INSERT comes from the connection's statement cache after the first row).
int insertRow(int id, Connection& db) {
  db.exec("insert into measurements(id, label, value) values(?, ?, ?)", id,
          fmt::format("sensor-{}", id % 97), std::sqrt(static_cast<double>(id)));
  return 1;
}

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 100'000;
  std::string tmp = (fs::temp_directory_path() / "flock-bulk-XXXXXX").string();
  if (rows <= 0 || ::mkdtemp(tmp.data()) == nullptr) return 1;
  const std::string path = tmp + "/bulk.db";
  const char* schema = "create table measurements(id integer primary key, label text, value real)";
  {
    Connection db(path, {.wal = true}); // WAL is stored in the file: set once, here
    db.exec(schema);
  }
  std::vector<int> ids(static_cast<std::size_t>(rows));
  for (int i = 0; i < rows; ++i) ids[static_cast<std::size_t>(i)] = i;

  // One transaction per batch; synchronous=normal: in WAL mode a commit then waits for no fsync
  // (a power cut may lose the last commits, never corrupt the file).
  flockmp::DatabaseAsync bulk{
      {.pool = {.checkProgress = false}, .batchTransactions = true},
      flockmp::sqlite::setup("bulk_db", path,
                             {.onOpen = [](Connection& c) { c.exec("pragma synchronous=normal"); }})};
  auto t0 = Clock::now();
  bulk.apply(ids, &insertRow);
  const double batched = secondsSince(t0);

  Connection check(path);
  const auto written = check.scalar<long>("select count(*) from measurements");
  const auto distinct = check.scalar<long>("select count(distinct id) from measurements");
  fmt::print("rows written: {}, each once: {}\n", written, written == rows && distinct == rows);
  fmt::print("batch transactions: {} rows in {:.2f} s ({:.0f} rows/s)\n", rows, batched,
             rows / batched);

  // The same inserts committed one by one, with SQLite's default journal and synchronous=full:
  // every row waits for the disk. A few rows are enough to see the cost per row.
  const std::string slowPath = tmp + "/autocommit.db";
  Connection(slowPath).exec(schema);
  const int few = std::min(rows, 100);
  flockmp::DatabaseAsync autocommit{{.pool = {.checkProgress = false}},
                                    flockmp::sqlite::setup("autocommit_db", slowPath)};
  t0 = Clock::now();
  autocommit.apply(std::vector<int>(ids.begin(), ids.begin() + few), &insertRow);
  const double single = secondsSince(t0);
  fmt::print("one commit per row: {} rows in {:.2f} s ({:.2f} ms a row; {} rows would take {:.0f} s)\n",
             few, single, 1000 * single / few, rows, single / few * rows);

  fs::remove_all(tmp);
  return written == rows && distinct == rows ? 0 : 1;
}
