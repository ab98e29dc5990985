// flock: the error model. Nothing is lost, nothing is silent: every input ends with a value or a
// Failure that names its index and cause.
#pragma once

#include "detail/config.hpp"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/core.h>

#if FLOCK_ENGINE_DEFINITIONS // only the definitions need these
#include <sys/types.h>
#include <stdexcept>
#include <system_error>
#include <typeinfo>
#endif

namespace flockmp {

/// Base of every exception flock throws. Catch this to handle any flock failure.
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// An option that makes no sense (`poolSize = 0`, a negative duration...); the message names
/// the option and the value given.
class OptionError : public Error {
public:
  using Error::Error;
};

/// A system call flock needed failed (fork, socketpair, pidfd_open...). `code()` keeps the errno
/// (compare it with `std::errc` values); the message names the operation, the errno text and,
/// where one helps, the limit to raise.
class SystemError : public Error {
public:
  SystemError(const std::string& what, std::error_code code) : Error(what), code_(code) {}
  /// The errno of the failed call, in the generic category.
  [[nodiscard]] const std::error_code& code() const noexcept { return code_; }

private:
  std::error_code code_;
};

/// Bytes that cannot be decoded (truncated, corrupt, or of another type), or a value the codec
/// refused to encode.
class CodecError : public Error {
public:
  using Error::Error;
};

/// A worker sent bytes that are not a valid frame (garbage, truncation, an unknown kind).
class ProtocolError : public Error {
public:
  using Error::Error;
};

/// Why one input has no result.
enum class FailureKind {
  exception, ///< the callable threw; `type` and `message` say what
  crashed,   ///< the worker died of a signal or exited while running this input
  timedOut,  ///< the input ran longer than `Options::timeOutError`
  codec,     ///< the result (or the input) could not be encoded or decoded
  protocol,  ///< the worker sent a corrupt frame while this input was in flight
  setup,     ///< per-worker setup failed, so this input could not run
  cancelled, ///< the call was cancelled through `Options::stopToken` before this input ran
  notRun,    ///< the call gave up (restart budget exhausted) before this input could run
  outOfMemory, ///< the input pushed its worker past `Options::memoryLimit`; the worker was replaced
};

/// The name of a failure kind, as it appears in messages (`"crashed"`, `"timed out"`...).
constexpr std::string_view toString(FailureKind k) noexcept {
  switch (k) {
  case FailureKind::exception: return "exception";
  case FailureKind::crashed: return "crashed";
  case FailureKind::timedOut: return "timed out";
  case FailureKind::codec: return "codec error";
  case FailureKind::protocol: return "protocol error";
  case FailureKind::setup: return "setup error";
  case FailureKind::cancelled: return "cancelled";
  case FailureKind::notRun: return "not run";
  case FailureKind::outOfMemory: return "out of memory";
  }
  return "unknown";
}

/// One input that has no result, and why.
struct Failure {
  std::size_t index = 0;            ///< position of the input in the input range
  FailureKind kind = FailureKind::exception;
  std::string message;              ///< `what()` of the exception, or a description of the fault
  std::string type;                 ///< exception type name (demangled), or signal name (`SIGSEGV`)
  int signal = 0;                   ///< the signal that killed the worker, when kind is crashed
  std::optional<int> exitStatus;    ///< the worker's exit status, when it exited mid-task
  pid_t pid = 0;                    ///< the worker that ran (or was running) the input
  int rank = -1;                    ///< under flockmp::mpi, the MPI rank whose worker it was; else -1
  std::string host;                 ///< under flockmp::mpi, that rank's host (MPI_Get_processor_name)

  /// One line: `input 7: exception std::runtime_error: bad value (worker 1234)`, and under
  /// flockmp::mpi `(worker 1234, rank 2 on node7)`.
  [[nodiscard]] std::string describe() const;
};

/// The result of one input: its value, or the Failure that explains why there is none.
///
///   for (auto& o : flockmp::FunctionAsync::tryApply(xs, fn))
///     if (o) use(*o); else log(o.failure().describe());
template <class R>
class Outcome {
public:
  Outcome(R value) : v_(std::in_place_index<0>, std::move(value)) {} // NOLINT: implicit on purpose
  Outcome(Failure f) : v_(std::in_place_index<1>, std::move(f)) {}   // NOLINT

  [[nodiscard]] bool hasValue() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return hasValue(); }

  /// The value; throws flockmp::Error naming the failure when there is none.
  [[nodiscard]] R& value() & { check(); return std::get<0>(v_); }
  [[nodiscard]] const R& value() const& { check(); return std::get<0>(v_); }
  [[nodiscard]] R&& value() && { check(); return std::get<0>(std::move(v_)); }
  R& operator*() & { return value(); }
  const R& operator*() const& { return value(); }
  R* operator->() { return &value(); }
  const R* operator->() const { return &value(); }

  /// The failure; throws flockmp::Error when the input succeeded.
  [[nodiscard]] const Failure& failure() const {
    if (hasValue()) throw Error("flockmp::Outcome::failure(): the input succeeded");
    return std::get<1>(v_);
  }

private:
  void check() const {
    if (!hasValue()) throw Error(fmt::format("flockmp::Outcome::value(): {}", std::get<1>(v_).describe()));
  }
  std::variant<R, Failure> v_;
};

/// Outcome of a callable that returns void: success, or a Failure.
template <>
class Outcome<void> {
public:
  Outcome() = default;
  Outcome(Failure f) : f_(std::move(f)) {} // NOLINT
  [[nodiscard]] bool hasValue() const noexcept { return !f_.has_value(); }
  explicit operator bool() const noexcept { return hasValue(); }
  void value() const {
    if (f_) throw Error(fmt::format("flockmp::Outcome::value(): {}", f_->describe()));
  }
  [[nodiscard]] const Failure& failure() const {
    if (!f_) throw Error("flockmp::Outcome::failure(): the input succeeded");
    return *f_;
  }

private:
  std::optional<Failure> f_;
};

/// Thrown by `apply`/`executeAsync` when at least one input failed. `what()` names the first
/// failure by index and counts the others; `failures()` lists them all (sorted by index), and
/// `outcomes<R>()` gives every input's outcome, so the results that succeeded are not lost.
///
///   try { auto r = flockmp::FunctionAsync::apply(xs, fn); }
///   catch (const flockmp::TaskError& e) {
///     for (auto& f : e.failures()) std::cerr << f.describe() << '\n';
///     auto all = e.outcomes<int>(); // successes included
///   }
class TaskError : public Error {
public:
  template <class R>
  TaskError(std::vector<Failure> failures, std::vector<Outcome<R>> outcomes)
      : Error(summarize(failures)), failures_(std::move(failures)),
        outcomes_(std::make_shared<std::vector<Outcome<R>>>(std::move(outcomes))),
        outcomeType_(&typeid(R)) {}

  /// Every failed input, sorted by index.
  [[nodiscard]] const std::vector<Failure>& failures() const noexcept { return failures_; }

  /// One outcome per input, in input order. `R` must be the callable's result type; another type
  /// throws flockmp::Error.
  template <class R>
  [[nodiscard]] const std::vector<Outcome<R>>& outcomes() const {
    if (*outcomeType_ != typeid(R))
      throw Error("flockmp::TaskError::outcomes<R>(): R is not the result type of the call");
    return *static_cast<const std::vector<Outcome<R>>*>(outcomes_.get());
  }

private:
  static std::string summarize(const std::vector<Failure>& fs);

  std::vector<Failure> failures_;
  std::shared_ptr<const void> outcomes_;
  const std::type_info* outcomeType_;
};

} // namespace flockmp

#if FLOCK_ENGINE_DEFINITIONS
namespace flockmp {

FLOCK_ENGINE_INLINE std::string Failure::describe() const {
  std::string s = fmt::format("input {}: {}", index, toString(kind));
  if (!type.empty()) s += fmt::format(" {}", type);
  if (!message.empty()) s += fmt::format(": {}", message);
  if (pid != 0 && rank >= 0) s += fmt::format(" (worker {}, rank {} on {})", pid, rank, host);
  else if (pid != 0) s += fmt::format(" (worker {})", pid);
  else if (rank >= 0) s += fmt::format(" (rank {} on {})", rank, host);
  return s;
}

FLOCK_ENGINE_INLINE std::string TaskError::summarize(const std::vector<Failure>& fs) {
  if (fs.empty()) return "flock: task error";
  std::string s = fmt::format("flock: {}", fs.front().describe());
  if (fs.size() > 1)
    s += fmt::format(" (and {} other failed input{})", fs.size() - 1, fs.size() == 2 ? "" : "s");
  return s;
}

} // namespace flockmp
#endif // FLOCK_ENGINE_DEFINITIONS
