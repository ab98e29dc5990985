// A persistent pool under Context::forkserver, for a program that runs threads of its own.
//
// fork() copies only the calling thread: a lock that another thread held at that instant (inside
// malloc, a logging library, a driver) stays locked forever in the child. So flockmp::init, the
// first statement of main, starts a small single-threaded "forkserver" process before any thread
// exists, and the pool's workers are forked from it, never from this process. A worker starts in
// a fraction of a millisecond whatever this process's size, then serves every call of its pool.
//
// The workers inherit nothing of this process's later state, so the callable must travel: here a
// function object the codec carries (an aggregate of codable fields), with its configuration.
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

// Which shard a key belongs to: a seeded 64-bit FNV-1a hash of the key, modulo the shard count.
// An aggregate: each call sends its seed and shard count along with it.
struct ShardOf {
  std::uint64_t seed = 0;
  std::uint32_t shards = 1;

  std::uint32_t operator()(const std::string& key) const {
    std::uint64_t h = 14695981039346656037ULL ^ seed;
    for (const unsigned char c : key) {
      h ^= c;
      h *= 1099511628211ULL;
    }
    return static_cast<std::uint32_t>(h % shards);
  }
};

int main(int argc, char** argv) {
  flockmp::init(argc, argv); // first, while this process has a single thread: starts the forkserver

  // The application's own threads, running while the pool works: a heartbeat, say. Forking this
  // process now could copy a lock this thread holds; the forkserver was forked before it existed.
  std::jthread heartbeat([](const std::stop_token& stop) {
    while (!stop.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });

  std::vector<std::string> keys;
  for (int user = 1000; user < 1012; ++user) keys.push_back(fmt::format("user:{}", user));

  flockmp::BaseMultiProc pool{{.poolSize = 2, .context = flockmp::Context::forkserver}};

  const std::vector<std::uint32_t> four = pool.apply(keys, ShardOf{.seed = 7, .shards = 4});
  fmt::print("4 shards: {}\n", four);
  // Another configuration, the same workers: the function object travels with each call.
  const std::vector<std::uint32_t> eight = pool.apply(keys, ShardOf{.seed = 7, .shards = 8});
  fmt::print("8 shards: {}\n", eight);

  // Same hash as computed here, in this process.
  const ShardOf local{.seed = 7, .shards = 4};
  bool same = true;
  for (std::size_t i = 0; i < keys.size(); ++i) same = same && four[i] == local(keys[i]);
  fmt::print("same as computed in this process: {}\n", same);

  std::map<std::uint32_t, int> perShard;
  for (const auto s : four) ++perShard[s];
  fmt::print("keys per shard (of 4): {}\n", perShard);

  // Each worker reports its parent: the forkserver, not this process.
  const std::vector<pid_t> parents = pool.apply(std::vector<int>{0, 1}, [](int) { return ::getppid(); });
  const bool fromServer = std::none_of(parents.begin(), parents.end(), [](pid_t p) { return p == ::getpid(); });
  fmt::print("workers forked by the forkserver, not by this multithreaded process: {}\n", fromServer);
} // the pool closes, then the heartbeat thread is stopped and joined

