// The channel: frames over pipes and sockets, partial I/O, EOF, no SIGPIPE, corrupt input.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <flock/detail/protocol.hpp>

#include "catch.hpp"

namespace {

struct PipePair {
  int r = -1, w = -1;
  PipePair() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    r = p[0];
    w = p[1];
  }
  ~PipePair() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

std::vector<std::byte> frameBytes(flockmp::detail::FrameKind kind, const std::string& payload) {
  // Allocated at the frame's size, then emptied for FrameWriter to append to. Appending the header
  // to a vector that never allocated makes GCC 12 at -O3 (Release) warn about std::vector's
  // reallocation path, a false -Wstringop-overflow; reserve() does not avoid it.
  std::vector<std::byte> buf(sizeof(flockmp::detail::FrameHeader) + payload.size());
  buf.clear();
  flockmp::detail::FrameWriter w(buf);
  w.begin(kind);
  w.append(payload.data(), payload.size());
  w.end();
  return buf;
}

std::string text(std::span<const std::byte> s) { return {reinterpret_cast<const char*>(s.data()), s.size()}; }

} // namespace

TEST_CASE("frames written byte by byte are reassembled by the reader", "[channel]") {
  PipePair p;
  flockmp::detail::setNonBlocking(p.r);
  auto a = frameBytes(flockmp::detail::FrameKind::result, "hello");
  auto b = frameBytes(flockmp::detail::FrameKind::batchDone, std::string(100, 'x'));
  std::vector<std::byte> all(a);
  all.insert(all.end(), b.begin(), b.end());
  flockmp::detail::FrameReader reader;
  std::vector<std::string> got;
  for (std::byte byte : all) {
    REQUIRE(::write(p.w, &byte, 1) == 1);
    REQUIRE(reader.fill(p.r) == flockmp::detail::FrameReader::Fill::data);
    while (auto f = reader.next()) got.push_back(text(f->payload));
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0] == "hello");
  CHECK(got[1] == std::string(100, 'x'));
  CHECK(reader.pending() == 0);
  CHECK(reader.fill(p.r) == flockmp::detail::FrameReader::Fill::wouldBlock);
  ::close(p.w);
  p.w = -1;
  CHECK(reader.fill(p.r) == flockmp::detail::FrameReader::Fill::eof);
}

TEST_CASE("a frame larger than the pipe buffer crosses intact", "[channel]") {
  PipePair p;
  flockmp::detail::setNonBlocking(p.r);
  std::string big(8 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 % 251);
  auto frame = frameBytes(flockmp::detail::FrameKind::result, big);
  bool written = false; // Catch2 assertions are not thread-safe: check after join
  std::thread writer([&] { written = flockmp::detail::writeAll(p.w, frame.data(), frame.size()); });
  flockmp::detail::FrameReader reader;
  std::string got;
  while (got.empty()) {
    pollfd pfd{p.r, POLLIN, 0};
    ::poll(&pfd, 1, 5000);
    REQUIRE(reader.fill(p.r) != flockmp::detail::FrameReader::Fill::eof);
    if (auto f = reader.next()) got = text(f->payload);
  }
  writer.join();
  CHECK(written);
  CHECK(got == big);
}

TEST_CASE("readExact reports EOF before a frame and truncation inside one", "[channel]") {
  {
    PipePair p;
    ::close(p.w);
    p.w = -1;
    char buf[16];
    CHECK_FALSE(flockmp::detail::readExact(p.r, buf, sizeof buf));
  }
  {
    PipePair p;
    REQUIRE(::write(p.w, "abc", 3) == 3);
    ::close(p.w);
    p.w = -1;
    char buf[16];
    CHECK_THROWS_AS(flockmp::detail::readExact(p.r, buf, sizeof buf), flockmp::ProtocolError);
  }
}

TEST_CASE("writing to a socket whose reader died returns false instead of raising SIGPIPE", "[channel]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  ::close(sv[1]);
  std::string data(1 << 20, 'z');
  // If SIGPIPE were raised, this test process would die here.
  CHECK_FALSE(flockmp::detail::writeAll(sv[0], data.data(), data.size(), true));
  ::close(sv[0]);
}

TEST_CASE("the reader rejects bytes that are not frames", "[channel][fuzz]") {
  SECTION("bad magic") {
    flockmp::detail::FrameReader r;
    std::vector<std::byte> junk(32, std::byte{0x41});
    r.feed(junk);
    CHECK_THROWS_AS(r.next(), flockmp::ProtocolError);
  }
  SECTION("unknown kind") {
    auto f = frameBytes(flockmp::detail::FrameKind::result, "x");
    std::uint32_t kind = 99;
    std::memcpy(f.data() + 4, &kind, 4);
    flockmp::detail::FrameReader r;
    r.feed(f);
    CHECK_THROWS_AS(r.next(), flockmp::ProtocolError);
  }
  SECTION("absurd length") {
    auto f = frameBytes(flockmp::detail::FrameKind::result, "x");
    std::uint64_t len = ~std::uint64_t{0};
    std::memcpy(f.data() + 8, &len, 8);
    flockmp::detail::FrameReader r;
    r.feed(f);
    CHECK_THROWS_AS(r.next(), flockmp::ProtocolError);
  }
  SECTION("random and mutated streams never crash: frames or ProtocolError") {
    std::mt19937 rng(12345);
    auto valid = frameBytes(flockmp::detail::FrameKind::result, "payload-payload");
    for (int iter = 0; iter < 20000; ++iter) {
      std::vector<std::byte> bytes;
      if (iter % 2 == 0) {
        bytes.resize(rng() % 64);
        for (auto& b : bytes) b = static_cast<std::byte>(rng());
      } else {
        bytes = valid;
        bytes.insert(bytes.end(), valid.begin(), valid.end());
        for (int k = 0; k < 3; ++k) bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
        bytes.resize(rng() % (bytes.size() + 1));
      }
      flockmp::detail::FrameReader r;
      r.feed(bytes);
      try {
        while (auto f = r.next()) CHECK(f->payload.size() <= bytes.size());
      } catch (const flockmp::ProtocolError&) {
      }
    }
  }
}
