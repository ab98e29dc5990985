// flock internals: the protocol between the parent and its workers. Every frame and every payload
// layout is defined here, once, and both sides encode and decode through it.
//
// A frame is a 16-byte header (magic, kind, payload length) followed by the payload. Writes
// handle partial writes and EINTR; reads handle partial reads, EINTR and EOF. The parent never
// gets SIGPIPE: it writes to workers over a socket with MSG_NOSIGNAL, and only reads pipes.
#pragma once

#include "config.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "../codec.hpp"
#include "../error.hpp"
#include "portable.hpp"
#include "posix.hpp"

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#endif

namespace flockmp::detail {

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
  runShared = 9, ///< parent -> pool worker: run [begin, end) with a shared area of the region both
                 ///< sides map for its raw inputs and/or raw results ([RunHead][SharedArea])
  sharedBlock = 10, ///< worker -> parent: [RawBlockHead]: `count` raw results for [begin, begin + count)
                    ///< are in the batch's shared result area, at (begin - batch begin) * size
  partial = 11,     ///< worker -> parent (mapReduce): [RawBlockHead] + the encoded fold of the
                    ///< results of inputs [begin, begin + count) that did not fail
  timing = 12,      ///< worker -> parent, only while the call asks for insights, just before a
                    ///< batchDone: [TimingHead] + `count` TimedInput (the batch's slowest inputs)
};

/// The highest FrameKind value; a header with a kind above it is corrupt.
inline constexpr FrameKind lastFrameKind = FrameKind::timing;

struct FrameHeader {
  static constexpr std::uint32_t magicValue = 0x314B4C46; // "FLK1"
  std::uint32_t magic = magicValue;
  FrameKind kind{};
  std::uint64_t length = 0;
};
static_assert(sizeof(FrameHeader) == 16);

/// Largest payload accepted; a larger length in a header means the stream is corrupt.
inline constexpr std::uint64_t maxFramePayload = std::uint64_t{1} << 36;


/// Fixed heads of payloads, as object bytes (both ends run the same binary on the same machine).
struct RunHead {          ///< run: inputs [begin, end); on a pool their encoded values follow
  std::uint64_t begin = 0, end = 0;
};
struct SharedArea {       ///< runShared, after RunHead: a batch's parts of the shared region
  std::uint64_t inputOffset = 0, inputBytes = 0;   ///< its raw inputs (0 bytes: they are not there)
  std::uint64_t resultOffset = 0, resultBytes = 0; ///< room for its raw results (0 bytes: none)
};
/// A pool's worker has two areas in the shared region (one for the batch it runs, one for a batch
/// queued behind it), each with this many bytes for raw inputs and as many for raw results. A
/// batch whose raw inputs or results fit has them copied there once instead of crossing a socket;
/// an area is reused only after its batch is acknowledged, so neither side waits for the other.
inline constexpr std::size_t sharedAreaBytes = std::size_t{2} << 20;
struct ResultHead {       ///< result: the encoded value of input `index` follows
  std::uint64_t index = 0;
};
struct RawBlockHead {     ///< rawBlock: the object bytes of `count` results for [begin, begin + count) follow
  std::uint64_t begin = 0, count = 0;
};
struct BatchDoneBody {    ///< batchDone: the whole payload; `ns` is the batch's time in the worker
  std::uint64_t begin = 0, end = 0, ns = 0;
};

/// The most slowest inputs a timing frame carries (the parent keeps as many for the call).
inline constexpr std::size_t maxTimedInputs = 5;
struct TimingHead {       ///< timing: the batch [begin, end) just run, as measured by its worker
  std::uint64_t begin = 0, end = 0;
  std::uint64_t tasksNs = 0;   ///< the sum of its inputs' times
  std::uint64_t peakRss = 0;   ///< the worker's peak resident set size so far, in bytes
  std::uint64_t count = 0;     ///< TimedInput records that follow (at most maxTimedInputs)
};
struct TimedInput {       ///< timing, after TimingHead: one of the batch's slowest inputs
  std::uint64_t index = 0, ns = 0;
};

/// The fixed head of a payload; throws ProtocolError (naming `Head`'s frame) when it is shorter.
template <class Head>
Head headOf(std::span<const std::byte> payload) {
  if (payload.size() < sizeof(Head))
    throw ProtocolError(fmt::format("flock: a frame of {} bytes is shorter than its {}-byte head", payload.size(),
                                    sizeof(Head)));
  Head h;
  std::memcpy(&h, payload.data(), sizeof h);
  return h;
}

/// What follows the fixed head.
template <class Head>
std::span<const std::byte> afterHead(std::span<const std::byte> payload) {
  return payload.subspan(sizeof(Head));
}

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
FLOCK_ENGINE_INLINE bool writeAll(int fd, const void* data, std::size_t n, bool noSignal = false);

/// Read exactly n bytes (blocking). Returns false on EOF before the first byte; throws
/// ProtocolError on EOF in the middle (a truncated frame) and flockmp::Error on other errors.
FLOCK_ENGINE_INLINE bool readExact(int fd, void* data, std::size_t n);

/// Appends frames to a byte buffer so that many frames go out in one write.
class FrameWriter {
public:
  explicit FrameWriter(std::vector<std::byte>& buf) noexcept : buf_(buf) {}

  /// Start a frame; the payload is appended to buffer() until end().
  void begin(FrameKind kind);
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
  /// Where the frame begun last starts in the buffer.
  [[nodiscard]] std::size_t start() const noexcept { return start_; }
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
  Fill fill(int fd);

  /// The next complete frame, or nullopt if more bytes are needed. Throws ProtocolError when the
  /// bytes cannot be a frame (bad magic, unknown kind, absurd length).
  std::optional<FrameView> next();

  /// Bytes read from the fd by fill() so far.
  [[nodiscard]] std::uint64_t received() const noexcept { return received_; }

  /// Bytes received that do not form a complete frame yet.
  [[nodiscard]] std::size_t pending() const noexcept { return end_ - start_; }

  /// The header of the incomplete frame at the front, and the part of its payload received so
  /// far (for payloads the caller reads straight into their destination). Call after next()
  /// returned nullopt. Throws ProtocolError for a corrupt header.
  std::optional<FrameView> partial() const;
  /// Drop the incomplete frame returned by partial(): its caller reads the rest itself.
  void discardPartial() noexcept { start_ = end_; }

  /// Feed bytes directly (used by tests and fuzzers).
  void feed(std::span<const std::byte> bytes);

private:
  static void validate(const FrameHeader& h);

  std::optional<FrameHeader> peekHeader() const noexcept;
  void compact();

  std::vector<std::byte> buf_;
  std::size_t start_ = 0;
  std::size_t end_ = 0;
  std::uint64_t received_ = 0;
};

/// failure: [u64 index][u32 kind][u32 len][type][u32 len][message].
FLOCK_ENGINE_INLINE void appendFailure(FrameWriter& w, std::size_t index, FailureKind kind,
                                       std::string_view type, std::string_view message);

/// Parent side: decodes a failure record; throws ProtocolError on malformed bytes.
FLOCK_ENGINE_INLINE Failure parseFailure(std::span<const std::byte> payload);


/// setup: [u8 has][CodeRef] for the initializer, then for the finalizer. Sent first to a
/// forkserver or spawn worker, which did not inherit std::functions: both are plain functions.
inline constexpr std::uint64_t maxSetupPayload = std::uint64_t{1} << 16;

FLOCK_ENGINE_INLINE std::vector<std::byte> encodeSetup(void (*initializer)(), void (*finalizer)());

struct Setup {
  void (*initializer)() = nullptr;
  void (*finalizer)() = nullptr;
};

/// Worker side: the functions a setup frame names (throws flockmp::Error when one is not loaded).
FLOCK_ENGINE_INLINE Setup decodeSetup(std::span<const std::byte> payload);

/// call: [CodeRef of the thunk] then the bytes that rebuild the callable (see portable.hpp).
inline void encodeCallHead(ByteWriter& w, const CodeRef& thunk) { thunk.encode(w); }

struct CallView {
  CodeRef thunk;
  std::span<const std::byte> callable;
};

FLOCK_ENGINE_INLINE CallView decodeCall(std::span<const std::byte> payload);

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE bool writeAll(int fd, const void* data, std::size_t n, bool noSignal) {
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
      throwErrno("write to a worker channel");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

FLOCK_ENGINE_INLINE bool readExact(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      throwErrno("read from a flock channel");
    }
    if (r == 0) {
      if (got == 0) return false;
      throw ProtocolError(fmt::format("flock: channel closed in the middle of a frame ({} of {} bytes)", got, n));
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

FLOCK_ENGINE_INLINE void FrameWriter::begin(FrameKind kind) {
  start_ = buf_.size();
  FrameHeader h{FrameHeader::magicValue, kind, 0};
  append(&h, sizeof h);
}

FLOCK_ENGINE_INLINE auto FrameReader::fill(int fd) -> Fill {
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
      throwErrno("read from a worker");
    }
    if (r == 0) return Fill::eof;
    end_ += static_cast<std::size_t>(r);
    received_ += static_cast<std::uint64_t>(r);
    return Fill::data;
  }
}

FLOCK_ENGINE_INLINE std::optional<FrameView> FrameReader::next() {
  auto h = peekHeader();
  if (!h) return std::nullopt;
  validate(*h);
  if (end_ - start_ < sizeof(FrameHeader) + h->length) return std::nullopt;
  FrameView v{h->kind,
              {buf_.data() + start_ + sizeof(FrameHeader), static_cast<std::size_t>(h->length)}};
  start_ += sizeof(FrameHeader) + h->length;
  return v;
}

FLOCK_ENGINE_INLINE std::optional<FrameView> FrameReader::partial() const {
  auto h = peekHeader();
  if (!h) return std::nullopt;
  validate(*h);
  return FrameView{
      h->kind, {buf_.data() + start_ + sizeof(FrameHeader), end_ - start_ - sizeof(FrameHeader)}};
}

FLOCK_ENGINE_INLINE void FrameReader::feed(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  compact();
  buf_.resize(end_ + bytes.size());
  std::memcpy(buf_.data() + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

FLOCK_ENGINE_INLINE void FrameReader::validate(const FrameHeader& h) {
  if (h.magic != FrameHeader::magicValue)
    throw ProtocolError(
        fmt::format("flock: corrupt frame from a worker (bad magic 0x{:08x})", h.magic));
  auto k = static_cast<std::uint32_t>(h.kind);
  if (k < 1 || k > static_cast<std::uint32_t>(lastFrameKind))
    throw ProtocolError(fmt::format("flock: corrupt frame from a worker (unknown kind {})", k));
  if (h.length > maxFramePayload)
    throw ProtocolError(fmt::format("flock: corrupt frame from a worker (length {})", h.length));
}

FLOCK_ENGINE_INLINE std::optional<FrameHeader> FrameReader::peekHeader() const noexcept {
  if (end_ - start_ < sizeof(FrameHeader)) return std::nullopt;
  FrameHeader h;
  std::memcpy(&h, buf_.data() + start_, sizeof h);
  return h;
}

FLOCK_ENGINE_INLINE void FrameReader::compact() {
  if (start_ == end_) {
    start_ = end_ = 0;
  } else if (start_ > 0 && start_ >= (buf_.size() >> 1)) {
    std::memmove(buf_.data(), buf_.data() + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
  }
}

FLOCK_ENGINE_INLINE void appendFailure(FrameWriter& w, std::size_t index, FailureKind kind,
                                       std::string_view type, std::string_view message) {
  w.begin(FrameKind::failure);
  w.appendRaw(static_cast<std::uint64_t>(index));
  w.appendRaw(static_cast<std::uint32_t>(kind));
  w.appendRaw(static_cast<std::uint32_t>(type.size()));
  w.append(type.data(), type.size());
  w.appendRaw(static_cast<std::uint32_t>(message.size()));
  w.append(message.data(), message.size());
  w.end();
}

FLOCK_ENGINE_INLINE Failure parseFailure(std::span<const std::byte> payload) {
  auto fail = [] { return ProtocolError("flock: malformed failure record from a worker"); };
  std::size_t pos = 0;
  auto take = [&](void* dst, std::size_t n) {
    if (payload.size() - pos < n) throw fail();
    std::memcpy(dst, payload.data() + pos, n);
    pos += n;
  };
  std::uint64_t index = 0;
  std::uint32_t kind = 0, len = 0;
  take(&index, sizeof index);
  take(&kind, sizeof kind);
  if (kind > static_cast<std::uint32_t>(FailureKind::outOfMemory)) throw fail();
  Failure f;
  f.index = static_cast<std::size_t>(index);
  f.kind = static_cast<FailureKind>(kind);
  take(&len, sizeof len);
  if (payload.size() - pos < len) throw fail();
  f.type.assign(reinterpret_cast<const char*>(payload.data() + pos), len);
  pos += len;
  take(&len, sizeof len);
  if (payload.size() - pos < len) throw fail();
  f.message.assign(reinterpret_cast<const char*>(payload.data() + pos), len);
  pos += len;
  if (pos != payload.size()) throw fail();
  return f;
}

FLOCK_ENGINE_INLINE std::vector<std::byte> encodeSetup(void (*initializer)(), void (*finalizer)()) {
  std::vector<std::byte> payload;
  ByteWriter w(payload);
  for (auto fn : {initializer, finalizer}) {
    w.writeRaw(static_cast<std::uint8_t>(fn != nullptr));
    if (fn) codeRefOf(reinterpret_cast<const void*>(fn)).encode(w);
  }
  return payload;
}

FLOCK_ENGINE_INLINE Setup decodeSetup(std::span<const std::byte> payload) {
  Setup s;
  ByteReader r(payload);
  for (auto* fn : {&s.initializer, &s.finalizer})
    if (r.readRaw<std::uint8_t>() != 0) *fn = reinterpret_cast<void (*)()>(resolveCodeRef(CodeRef::decode(r)));
  r.expectEnd();
  return s;
}

FLOCK_ENGINE_INLINE CallView decodeCall(std::span<const std::byte> payload) {
  ByteReader r(payload);
  CallView v;
  v.thunk = CodeRef::decode(r);
  v.callable = payload.subspan(payload.size() - r.remaining());
  return v;
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
