// flock: framed messages over pipes and sockets between the parent and its workers.
//
// A frame is a 16-byte header (magic, kind, payload length) followed by the payload. Writes
// handle partial writes and EINTR; reads handle partial reads, EINTR and EOF. The parent never
// gets SIGPIPE: it writes to workers over a socket with MSG_NOSIGNAL, and only reads pipes.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "detail/posix.hpp"
#include "error.hpp"

namespace flockmp {

/// What a frame carries.
enum class FrameKind : std::uint32_t {
  run = 1,       ///< parent -> worker: run inputs [begin, end) ([u64 begin][u64 end]; on a pool
                 ///< the encoded inputs follow)
  stop = 2,      ///< parent -> worker: finish and exit
  result = 3,    ///< worker -> parent: index + encoded result
  failure = 4,   ///< worker -> parent: index + failure kind + type + message
  batchDone = 5, ///< worker -> parent: [begin, end) finished, + batch duration in ns
  rawBlock = 6,  ///< worker -> parent: [u64 begin][u64 count] + the object bytes of `count`
                 ///< trivially copyable results, read by the parent straight into the result
  call = 7,      ///< parent -> pool worker: the thunk of a call (a CodeRef) + the callable's bytes
  setup = 8,     ///< parent -> forkserver/spawn worker, first: its initializer and finalizer
};

struct FrameHeader {
  static constexpr std::uint32_t magicValue = 0x314B4C46; // "FLK1"
  std::uint32_t magic = magicValue;
  FrameKind kind{};
  std::uint64_t length = 0;
};
static_assert(sizeof(FrameHeader) == 16);

/// Largest payload accepted; a larger length in a header means the stream is corrupt.
inline constexpr std::uint64_t maxFramePayload = std::uint64_t{1} << 36;

/// A complete frame inside a reader's buffer (valid until the next fill()).
struct FrameView {
  FrameKind kind;
  std::span<const std::byte> payload;
};

/// Bytes per write(2). A pipe writer holds the pipe's lock for its whole copy and a reader spins
/// on it meanwhile; 64 KiB pieces keep that short on pipes (1 KB string results went from ~200 ms
/// to ~85 ms per 100,000 against single 1 MiB writes, before results moved to sockets) and cost
/// nothing measurable on the sockets the workers now write to.
inline constexpr std::size_t maxWriteChunk = std::size_t{1} << 16;

/// Write all of [data, data+n) to a pipe or socket, retrying on EINTR and partial writes.
/// Returns false when the peer has gone (EPIPE/ECONNRESET); throws flockmp::Error on other errors.
/// With `noSignal`, the fd must be a socket and SIGPIPE is suppressed (MSG_NOSIGNAL).
inline bool writeAll(int fd, const void* data, std::size_t n, bool noSignal = false) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const std::size_t piece = std::min(n, maxWriteChunk);
    ssize_t w = noSignal ? ::send(fd, p, piece, MSG_NOSIGNAL) : ::write(fd, p, piece);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd pfd{fd, POLLOUT, 0};
        ::poll(&pfd, 1, -1);
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return false;
      detail::throwErrno("write to a worker channel");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// Read exactly n bytes (blocking). Returns false on EOF before the first byte; throws
/// ProtocolError on EOF in the middle (a truncated frame) and flockmp::Error on other errors.
inline bool readExact(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      detail::throwErrno("read from a flock channel");
    }
    if (r == 0) {
      if (got == 0) return false;
      throw ProtocolError(fmt::format("flock: channel closed in the middle of a frame ({} of {} bytes)", got, n));
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

/// Appends frames to a byte buffer so that many frames go out in one write.
class FrameWriter {
public:
  explicit FrameWriter(std::vector<std::byte>& buf) noexcept : buf_(buf) {}

  /// Start a frame; the payload is appended to buffer() until end().
  void begin(FrameKind kind) {
    start_ = buf_.size();
    FrameHeader h{FrameHeader::magicValue, kind, 0};
    append(&h, sizeof h);
  }
  void append(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  template <class T>
  void appendRaw(const T& v) {
    append(&v, sizeof v);
  }
  /// Patch the length of the frame begun last.
  void end() noexcept {
    std::uint64_t len = buf_.size() - start_ - sizeof(FrameHeader);
    std::memcpy(buf_.data() + start_ + offsetof(FrameHeader, length), &len, sizeof len);
  }
  /// Drop the frame begun last (e.g. its payload failed to encode).
  void abandon() noexcept { buf_.resize(start_); }
  [[nodiscard]] std::vector<std::byte>& buffer() noexcept { return buf_; }

private:
  std::vector<std::byte>& buf_;
  std::size_t start_ = 0;
};

/// Incremental reader of frames from a non-blocking fd (the parent side of a worker's channel).
class FrameReader {
public:
  enum class Fill { data, wouldBlock, eof };

  /// Read what is available. Never blocks on a non-blocking fd.
  Fill fill(int fd) {
    compact();
    std::size_t want = 1 << 16;
    if (auto h = peekHeader(); h && h->length <= maxFramePayload)
      want = std::max<std::size_t>(want, sizeof(FrameHeader) + h->length - (end_ - start_));
    if (buf_.size() - end_ < want) buf_.resize(end_ + want);
    for (;;) {
      ssize_t r = ::read(fd, buf_.data() + end_, buf_.size() - end_);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Fill::wouldBlock;
        // A worker that died with commands unread resets the connection: that is its end.
        if (errno == ECONNRESET) return Fill::eof;
        detail::throwErrno("read from a worker");
      }
      if (r == 0) return Fill::eof;
      end_ += static_cast<std::size_t>(r);
      return Fill::data;
    }
  }

  /// The next complete frame, or nullopt if more bytes are needed. Throws ProtocolError when the
  /// bytes cannot be a frame (bad magic, unknown kind, absurd length).
  std::optional<FrameView> next() {
    auto h = peekHeader();
    if (!h) return std::nullopt;
    validate(*h);
    if (end_ - start_ < sizeof(FrameHeader) + h->length) return std::nullopt;
    FrameView v{h->kind, {buf_.data() + start_ + sizeof(FrameHeader), static_cast<std::size_t>(h->length)}};
    start_ += sizeof(FrameHeader) + h->length;
    return v;
  }

  /// Bytes received that do not form a complete frame yet.
  [[nodiscard]] std::size_t pending() const noexcept { return end_ - start_; }

  /// The header of the incomplete frame at the front, and the part of its payload received so
  /// far (for payloads the caller reads straight into their destination). Call after next()
  /// returned nullopt. Throws ProtocolError for a corrupt header.
  std::optional<FrameView> partial() const {
    auto h = peekHeader();
    if (!h) return std::nullopt;
    validate(*h);
    return FrameView{h->kind, {buf_.data() + start_ + sizeof(FrameHeader), end_ - start_ - sizeof(FrameHeader)}};
  }
  /// Drop the incomplete frame returned by partial(): its caller reads the rest itself.
  void discardPartial() noexcept { start_ = end_; }

  /// Feed bytes directly (used by tests and fuzzers).
  void feed(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    compact();
    buf_.resize(end_ + bytes.size());
    std::memcpy(buf_.data() + end_, bytes.data(), bytes.size());
    end_ += bytes.size();
  }

private:
  static void validate(const FrameHeader& h) {
    if (h.magic != FrameHeader::magicValue)
      throw ProtocolError(fmt::format("flock: corrupt frame from a worker (bad magic 0x{:08x})", h.magic));
    auto k = static_cast<std::uint32_t>(h.kind);
    if (k < 1 || k > 6) throw ProtocolError(fmt::format("flock: corrupt frame from a worker (unknown kind {})", k));
    if (h.length > maxFramePayload)
      throw ProtocolError(fmt::format("flock: corrupt frame from a worker (length {})", h.length));
  }

  std::optional<FrameHeader> peekHeader() const noexcept {
    if (end_ - start_ < sizeof(FrameHeader)) return std::nullopt;
    FrameHeader h;
    std::memcpy(&h, buf_.data() + start_, sizeof h);
    return h;
  }
  void compact() {
    if (start_ == end_) {
      start_ = end_ = 0;
    } else if (start_ > 0 && start_ >= (buf_.size() >> 1)) {
      std::memmove(buf_.data(), buf_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
    }
  }

  std::vector<std::byte> buf_;
  std::size_t start_ = 0;
  std::size_t end_ = 0;
};

} // namespace flockmp
