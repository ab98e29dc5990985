// Streaming through a pool: count the words of every line of stdin, in worker processes, with
// results in line order as they come. The input is read only as fast as the workers go (at most
// maxInFlight lines are held at once), so it may be larger than memory, or endless.
//
//   stream_lines < big.txt              # one "line N: K words" per line, then the totals
//   stream_lines --quiet < big.txt      # only the totals
//   stream_lines --generate 100000      # no stdin: 100,000 generated lines, never all in memory
#include <flock/flock.hpp>

#include <fmt/core.h>

#include <cstddef>
#include <cstring>
#include <iostream>
#include <istream>
#include <ranges>
#include <string>

/// One line of text, read by `>>` from a stream (std::views::istream reads them one by one).
struct Line {
  std::string text;
  friend std::istream& operator>>(std::istream& in, Line& line) { return std::getline(in, line.text); }
};

/// The work done for each line, in a worker.
std::size_t countWords(const Line& line) {
  std::size_t words = 0;
  bool inWord = false;
  for (const char c : line.text) {
    const bool blank = c == ' ' || c == '\t';
    if (!blank && !inWord) ++words;
    inWord = !blank;
  }
  return words;
}

/// Line i of the generated text: 1 to 12 words.
Line generated(int i) {
  Line line;
  for (int w = 0; w <= i % 12; ++w) line.text += w == 0 ? "word" : " word";
  return line;
}

int main(int argc, char** argv) {
  bool quiet = false;
  int generate = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quiet") == 0) quiet = true;
    else if (std::strcmp(argv[i], "--generate") == 0 && i + 1 < argc) generate = std::stoi(argv[++i]);
  }
  flockmp::BaseMultiProc pool{{.poolSize = 2}};
  std::size_t lines = 0, words = 0, longest = 0, longestAt = 0;
  auto count = [&](std::size_t n) {
    if (!quiet) fmt::print("line {}: {} words\n", lines + 1, n);
    if (n > longest) {
      longest = n;
      longestAt = lines + 1;
    }
    ++lines;
    words += n;
  };
  if (generate >= 0) {
    // A lazy range: each line is made when the stream reads it.
    for (std::size_t n : pool.imap(std::views::iota(0, generate) | std::views::transform(generated), countWords))
      count(n);
  } else {
    for (std::size_t n : pool.imap(std::views::istream<Line>(std::cin), countWords, {.maxInFlight = 8192})) count(n);
  }
  fmt::print("lines: {}, words: {}, longest: line {} ({} words)\n", lines, words, longestAt, longest);
}
