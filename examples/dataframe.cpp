// DataFrameAsync: the seed's two DataFrame examples (row-like and block-like apply), then the
// frame written to CSV and read back.
#include <unistd.h>

#include <flock/dataframe.hpp>

#include <fmt/core.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

using flockmp::DataFrame;
using flockmp::DataFrameAsync;
using flockmp::Row;
using flockmp::Style;

int main() {
  // Row-like: the callable sees one row; its results form a new column, in row order.
  DataFrame df{{"foo", {5, 10, 15, 20}}, {"bar", {1, 2, 3, 4}}};
  df["new-var"] = DataFrameAsync::apply(
      df[{"foo", "bar"}],
      [](const Row& x) {
        return std::pow(x.get<std::int64_t>("foo") + x.get<std::int64_t>("bar"), 2);
      },
      {.style = Style::rowLike});
  fmt::print("row-like:\n{}\n\n", df);

  // Block-like: the callable sees a chunk of rows and returns a frame; the chunks are put back
  // together in row order. Elementwise operators keep it one line.
  std::vector<std::int64_t> foo(1000), bar(1000);
  std::iota(foo.begin(), foo.end(), 0);    // 0, 1, ..., 999
  std::iota(bar.begin(), bar.end(), 2000); // 2000, ..., 2999
  const DataFrame big{{"foo", foo}, {"bar", bar}};
  const DataFrame squared = DataFrameAsync::apply(big, [](const DataFrame& x) { return x * x; },
                                                  {.style = Style::blockLike, .chunksize = 100});
  fmt::print("block-like:\n{:6}\n\n", squared);

  // CSV out and back in: types are inferred (int64, double, bool, string), quotes kept.
  df["label"] = std::vector<std::string>{"a", "b, with comma", "c \"quoted\"", "d"};
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / fmt::format("flock_example_{}.csv", ::getpid());
  df.writeCsv(path);
  const DataFrame back = DataFrame::readCsv(path);
  std::filesystem::remove(path);
  fmt::print("csv:\n{}", df.toCsv());
  fmt::print("read back equal: {}\n", back == df);
}
