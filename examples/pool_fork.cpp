// A persistent pool under Context::fork, the default. The workers are forked from this process at
// the pool's first call (or at start()) and then serve every later call until the pool closes, so
// a program that calls many times pays for the forks once. Context::fork needs no flockmp::init.
//
// The workers were forked before a later call's data existed, so a pool's callable must be one
// they can rebuild: a function pointer, a captureless lambda, an empty function object, a member
// function with a codable object, or a function object the codec carries. Its inputs travel to
// the workers through the codec. A capturing lambda is a compile-time error on a pool (the
// one-shot FunctionAsync::apply, which forks its workers for each call, accepts one).
#include <flock/flock.hpp>

#include <fmt/ranges.h>

#include <cstddef>
#include <numeric>
#include <string>
#include <vector>

// The words of one line of text: the work done for each input.
std::size_t countWords(const std::string& line) {
  std::size_t words = 0;
  bool inWord = false;
  for (const char c : line) {
    const bool blank = c == ' ' || c == '\t';
    if (!blank && !inWord) ++words;
    inWord = !blank;
  }
  return words;
}

int main() {
  // Two documents that arrive one after the other, as a service's requests would.
  const std::vector<std::string> poem = {
      "Tyger Tyger, burning bright,",
      "In the forests of the night;",
      "What immortal hand or eye,",
      "Could frame thy fearful symmetry?",
  };
  const std::vector<std::string> prose = {
      "It was the best of times, it was the worst of times,",
      "it was the age of wisdom,",
      "it was the age of foolishness",
  };

  flockmp::BaseMultiProc pool{{.poolSize = 2}}; // .context = flockmp::Context::fork is the default

  // The first call forks the two workers; a plain function is carried as a code offset.
  const std::vector<std::size_t> poemWords = pool.apply(poem, countWords);
  const std::vector<pid_t> workers = pool.workerPids();
  fmt::print("poem words per line: {}\n", poemWords); // [4, 6, 5, 5]

  // Later calls reuse those workers: no fork. A captureless lambda is portable too.
  const std::vector<std::size_t> proseWords = pool.apply(prose, countWords);
  const std::vector<std::size_t> proseChars = pool.apply(prose, [](const std::string& line) { return line.size(); });
  fmt::print("prose words per line: {}, total {}\n", proseWords,
             std::accumulate(proseWords.begin(), proseWords.end(), std::size_t{0})); // [12, 6, 6], total 24
  fmt::print("prose characters per line: {}\n", proseChars);                         // [52, 25, 29]
  fmt::print("workers: {}, the same for every call: {}\n", workers.size(), pool.workerPids() == workers);

  pool.close(); // optional: the destructor closes the pool too (each worker's finalizer runs)
}
