// flock internals: Options::memoryLimit. A worker's resident memory (RSS) is what the limit
// bounds; it is measured by the worker after each input (its peak, so memory touched and freed
// within the input counts) and by the parent while an input runs (current RSS, for an input that
// grows and never returns). Outside sanitizers the worker's address space is also capped
// (RLIMIT_AS) so that an allocation that could never fit fails at once with std::bad_alloc.
#pragma once

#include "config.hpp"

#include <sys/resource.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#include <fmt/core.h>

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sys/types.h>
#endif

namespace flockmp::detail {

/// The smallest memoryLimit accepted: below it no worker can even start, so the value is a
/// mistake (a count of megabytes where bytes are meant, say).
inline constexpr std::uint64_t minMemoryLimit = std::uint64_t{1} << 20;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool addressSpaceLimitUsable = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
inline constexpr bool addressSpaceLimitUsable = false;
#else
inline constexpr bool addressSpaceLimitUsable = true;
#endif
#else
/// False under sanitizers, which reserve terabytes of address space up front: RLIMIT_AS would
/// make their own mappings fail, so only the resident-memory checks apply there.
inline constexpr bool addressSpaceLimitUsable = true;
#endif

/// How formatBytes writes a count: `prose` for messages ("512 MiB", "1.5 GiB", "4096 bytes"),
/// `compact` for table cells ("512MiB", "1.5GiB", "4096B"; three significant digits, not four).
enum class ByteStyle { prose, compact };

/// A byte count for people, in binary units.
FLOCK_ENGINE_INLINE std::string formatBytes(std::uint64_t bytes, ByteStyle style = ByteStyle::prose);

/// Reads a small /proc file into `buf` (NUL-terminated); false when it cannot be read.
FLOCK_ENGINE_INLINE bool readProcFile(const char* path, char* buf, std::size_t size) noexcept;

/// Resident and virtual size of process `pid` (0: this process) in bytes, from /proc/<pid>/statm;
/// {0, 0} when it cannot be read (the process is gone).
struct MemoryUse {
  std::uint64_t resident = 0;
  std::uint64_t virtualSize = 0;
};
FLOCK_ENGINE_INLINE MemoryUse memoryUseOf(pid_t pid = 0) noexcept;

/// The peak resident memory of process `pid` (0: this process) in bytes: VmHWM of
/// /proc/<pid>/status, since it started or since resetPeak. 0 when it cannot be read (an exited
/// process has none left).
FLOCK_ENGINE_INLINE std::uint64_t peakResident(pid_t pid = 0) noexcept;

/// A cheap upper bound of peakResident(): getrusage's ru_maxrss (one system call, no /proc
/// parsing). It can be larger than the peak (it keeps the peak from before an exec, and is not
/// lowered by resetPeak), never smaller.
FLOCK_ENGINE_INLINE std::uint64_t peakResidentBound() noexcept;

/// Lowers the peak to the current resident memory (Linux clear_refs "5"), so that what an
/// earlier call with another limit touched is not held against this one. Best effort.
FLOCK_ENGINE_INLINE void resetPeak() noexcept;

/// True when the exception being handled is a std::bad_alloc (not std::bad_array_new_length,
/// which says the size was invalid rather than that memory ran out).
FLOCK_ENGINE_INLINE bool handlingBadAlloc() noexcept;

/// Worker side: the memory limit this worker enforces, armed from its control block when it
/// starts and whenever a call brings another limit (pools).
class MemoryGuard {
public:
  /// The limit armed (0: none).
  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }

  /// Arm `limit` (0: none): the address-space cap follows it and the peak starts afresh.
  void arm(std::uint64_t limit) noexcept;

  /// The peak resident memory when it is past the limit, else 0.
  [[nodiscard]] std::uint64_t overLimit() const noexcept;

private:
  /// RLIMIT_AS's soft limit becomes the address space now plus twice the limit (an allocation
  /// that needs more can never fit; the margin is for what allocators reserve and do not touch),
  /// or its original value when there is no limit. The hard limit is never lowered.
  void capAddressSpace() noexcept;

  std::uint64_t limit_ = 0;
  bool savedSoft_ = false;
  rlim_t originalSoft_ = RLIM_INFINITY;
};

/// The one guard of this worker process.
inline MemoryGuard& memoryGuard() noexcept {
  static MemoryGuard guard;
  return guard;
}

} // namespace flockmp::detail

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp::detail {

FLOCK_ENGINE_INLINE std::string formatBytes(std::uint64_t bytes, ByteStyle style) {
  constexpr double kib = 1024.0, mib = kib * 1024, gib = mib * 1024;
  const bool prose = style == ByteStyle::prose;
  const auto b = static_cast<double>(bytes);
  const auto in = [prose](double value, const char* unit) {
    return prose ? fmt::format("{:.4g} {}", value, unit) : fmt::format("{:.3g}{}", value, unit);
  };
  if (b >= gib) return in(b / gib, "GiB");
  if (b >= mib) return in(b / mib, "MiB");
  if (b >= kib) return in(b / kib, "KiB");
  return prose ? fmt::format("{} bytes", bytes) : fmt::format("{}B", bytes);
}

FLOCK_ENGINE_INLINE bool readProcFile(const char* path, char* buf, std::size_t size) noexcept {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::size_t have = 0;
  while (have + 1 < size) {
    const ssize_t r = ::read(fd, buf + have, size - 1 - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += static_cast<std::size_t>(r);
  }
  ::close(fd);
  buf[have] = '\0';
  return have > 0;
}

FLOCK_ENGINE_INLINE MemoryUse memoryUseOf(pid_t pid) noexcept {
  char path[64];
  if (pid == 0) std::snprintf(path, sizeof path, "/proc/self/statm");
  else std::snprintf(path, sizeof path, "/proc/%d/statm", static_cast<int>(pid));
  char buf[256];
  if (!readProcFile(path, buf, sizeof buf)) return {};
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return {};
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return {resident * page, size * page};
}

FLOCK_ENGINE_INLINE std::uint64_t peakResident(pid_t pid) noexcept {
  char path[48];
  if (pid == 0) std::snprintf(path, sizeof path, "/proc/self/status");
  else std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  char buf[4096];
  if (!readProcFile(path, buf, sizeof buf)) return 0;
  const char* at = std::strstr(buf, "VmHWM:");
  if (at == nullptr) return 0;
  return std::strtoull(at + 6, nullptr, 10) * 1024;
}

FLOCK_ENGINE_INLINE std::uint64_t peakResidentBound() noexcept {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return UINT64_MAX;
  return static_cast<std::uint64_t>(u.ru_maxrss) * 1024;
}

FLOCK_ENGINE_INLINE void resetPeak() noexcept {
  const int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  [[maybe_unused]] const auto w = ::write(fd, "5", 1);
  ::close(fd);
}

FLOCK_ENGINE_INLINE bool handlingBadAlloc() noexcept {
  const std::exception_ptr e = std::current_exception();
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_array_new_length&) {
    return false;
  } catch (const std::bad_alloc&) {
    return true;
  } catch (...) {
    return false;
  }
}

FLOCK_ENGINE_INLINE void MemoryGuard::arm(std::uint64_t limit) noexcept {
  if (limit == limit_) return;
  limit_ = limit;
  if (addressSpaceLimitUsable) capAddressSpace();
  if (limit_ != 0) resetPeak();
}

FLOCK_ENGINE_INLINE std::uint64_t MemoryGuard::overLimit() const noexcept {
  if (limit_ == 0 || peakResidentBound() <= limit_) return 0;
  const std::uint64_t peak = peakResident();
  return peak > limit_ ? peak : 0;
}

FLOCK_ENGINE_INLINE void MemoryGuard::capAddressSpace() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_AS, &rl) != 0) return;
  if (!savedSoft_) {
    originalSoft_ = rl.rlim_cur;
    savedSoft_ = true;
  }
  rlim_t soft = originalSoft_;
  if (limit_ != 0) {
    const std::uint64_t now = memoryUseOf().virtualSize;
    if (now != 0) {
      const std::uint64_t want = now + 2 * limit_;
      if (soft == RLIM_INFINITY || want < soft) soft = static_cast<rlim_t>(want);
    }
  }
  if (rl.rlim_max != RLIM_INFINITY && soft > rl.rlim_max) soft = rl.rlim_max;
  rl.rlim_cur = soft;
  ::setrlimit(RLIMIT_AS, &rl);
}

} // namespace flockmp::detail
#endif // FLOCK_ENGINE_DEFINITIONS
