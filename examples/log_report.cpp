// mapReduce over files: a report of HTTP status codes and bytes served, from access logs. Each
// worker reads whole files and folds their lines into a partial report; the parent merges the
// partial reports. No per-file result is ever kept, however many files there are.
//
//   log_report access-*.log     # the logs named
//   log_report                  # 200 generated logs in a temporary directory (removed after)
#include <flock/flock.hpp>

#include <fmt/core.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

/// What the logs say, summed.
struct Report {
  std::map<int, long> byStatus; // requests per HTTP status
  long requests = 0;
  long bytes = 0;
  long malformed = 0; // lines that are not "<method> <path> <status> <bytes>"
};

/// The report of one file (the map step).
Report readLog(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot open " + file.string());
  Report r;
  std::string method, path;
  int status = 0;
  long bytes = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    if (!(fields >> method >> path >> status >> bytes)) {
      ++r.malformed;
      continue;
    }
    ++r.byStatus[status];
    ++r.requests;
    r.bytes += bytes;
  }
  return r;
}

/// Two reports as one (the reduce step: it also merges the workers' partial reports).
Report merge(Report a, const Report& b) {
  for (const auto& [status, n] : b.byStatus) a.byStatus[status] += n;
  a.requests += b.requests;
  a.bytes += b.bytes;
  a.malformed += b.malformed;
  return a;
}

/// `count` logs of 500 lines each in `dir`.
std::vector<std::filesystem::path> writeLogs(const std::filesystem::path& dir, int count) {
  const int statuses[] = {200, 200, 200, 304, 404, 500};
  std::vector<std::filesystem::path> files;
  for (int f = 0; f < count; ++f) {
    files.push_back(dir / fmt::format("access-{:03}.log", f));
    std::ofstream out(files.back());
    for (int i = 0; i < 500; ++i) out << "GET /page/" << i << ' ' << statuses[(f + i) % 6] << ' ' << 100 + i << '\n';
    if (f % 50 == 0) out << "a line that is not a request\n";
  }
  return files;
}

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> files(argv + 1, argv + argc);
  std::filesystem::path tmp;
  if (files.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "flock-logs-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return 1;
    tmp = pattern;
    files = writeLogs(tmp, 200);
  }
  try {
    const Report r = flockmp::FunctionAsync::mapReduce(files, readLog, merge, Report{}, {.poolSize = 2});
    fmt::print("{} files, {} requests, {} bytes, {} malformed lines\n", files.size(), r.requests, r.bytes, r.malformed);
    for (const auto& [status, n] : r.byStatus) fmt::print("  status {}: {} requests\n", status, n);
  } catch (const flockmp::TaskError& e) {
    fmt::print("some logs could not be read: {}\n", e.what());
  }
  if (!tmp.empty()) std::filesystem::remove_all(tmp);
}
