// Test helpers for flockmp::Insights: a strict JSON syntax check, and the checks every call's
// insights must pass whatever the call (they add up, times fit in the wall time).
#pragma once

#include <sys/types.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <flock/insights.hpp>

#include "catch.hpp"

namespace flockmp::test {

/// A strict JSON syntax check (RFC 8259 grammar: objects, arrays, strings with escapes,
/// numbers, true/false/null), so that toJson's output is known to parse in any tool.
class JsonChecker {
public:
  static bool valid(std::string_view s) {
    JsonChecker c{s};
    c.ws();
    if (!c.value()) return false;
    c.ws();
    return c.pos_ == s.size();
  }

private:
  explicit JsonChecker(std::string_view s) : s_(s) {}
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }
  bool string() {
    if (!eat('"')) return false;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c == '\\') {
        if (pos_ >= s_.size()) return false;
        const char e = s_[pos_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k)
            if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_++]))) return false;
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
      }
    }
    return false;
  }
  bool digits() {
    const std::size_t from = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    return pos_ > from;
  }
  bool number() {
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  bool value() {
    if (pos_ >= s_.size()) return false;
    const char c = s_[pos_];
    if (c == '{') return object();
    if (c == '[') return array();
    if (c == '"') return string();
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return number();
  }
  bool object() {
    eat('{');
    ws();
    if (eat('}')) return true;
    for (;;) {
      ws();
      if (!string()) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!value()) return false;
      ws();
      if (eat('}')) return true;
      if (!eat(',')) return false;
    }
  }
  bool array() {
    eat('[');
    ws();
    if (eat(']')) return true;
    for (;;) {
      ws();
      if (!value()) return false;
      ws();
      if (eat(']')) return true;
      if (!eat(',')) return false;
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

/// What holds for the insights of any call of `inputs` inputs run on at most `poolSize` workers
/// at once, in which no input was left unrun.
inline void checkInsightsAddUp(const flockmp::Insights& in, std::size_t inputs, std::size_t poolSize) {
  // A worker's resolved inputs are lost or counted twice (a row opened twice, a crashed input
  // counted on both workers), or the call's count is wrong.
  std::size_t sum = 0;
  for (const auto& w : in.workers) sum += w.inputs;
  CHECK(in.notRun == 0);
  CHECK(sum == inputs);
  CHECK(in.inputs == inputs);
  // Rows for workers that were never started, or pids not filled in.
  std::set<pid_t> pids;
  for (const auto& w : in.workers) {
    CHECK(w.pid > 0);
    pids.insert(w.pid);
  }
  CHECK(pids.size() == in.workers.size());
  // Task time measured with the wrong clock or unit, counted twice, or taken from outside the
  // call: each worker's task time fits in the wall time, their sum in wall × workers at once.
  std::chrono::nanoseconds tasks{};
  for (const auto& w : in.workers) {
    CHECK(w.tasks <= in.wall);
    CHECK(w.tasks.count() >= 0);
    CHECK(w.idle.count() >= 0);
    CHECK(w.idle <= in.wall);
    tasks += w.tasks;
  }
  CHECK(tasks <= in.wall * static_cast<long>(poolSize));
  CHECK(in.parentResults <= in.wall);
  // The slowest inputs: sorted, distinct, real indices, and no more than kept.
  CHECK(in.slowest.size() <= flockmp::Insights::slowestKept);
  std::set<std::size_t> seen;
  for (std::size_t k = 0; k < in.slowest.size(); ++k) {
    CHECK(in.slowest[k].index < inputs);
    seen.insert(in.slowest[k].index);
    if (k > 0) CHECK(in.slowest[k - 1].duration >= in.slowest[k].duration);
  }
  CHECK(seen.size() == in.slowest.size());
  // The JSON parses and names every worker; the table names every worker.
  const std::string json = in.toJson();
  CHECK(JsonChecker::valid(json));
  const std::string table = fmt::format("{}", in);
  for (const auto& w : in.workers) {
    CHECK(json.find(fmt::format("\"pid\":{},", w.pid)) != std::string::npos);
    CHECK(table.find(fmt::format(" {} ", w.pid)) != std::string::npos);
  }
}

/// Failures by kind counted from a call's failures.
inline std::map<flockmp::FailureKind, std::size_t> countKinds(const std::vector<flockmp::Failure>& failures) {
  std::map<flockmp::FailureKind, std::size_t> n;
  for (const auto& f : failures) ++n[f.kind];
  return n;
}

/// Insights' failures by kind equal those of the call (every kind, zeros included).
inline void checkFailureKinds(const flockmp::Insights& in, const std::vector<flockmp::Failure>& failures) {
  const auto n = countKinds(failures);
  for (const auto k : flockmp::detail::allFailureKinds) {
    CAPTURE(flockmp::toString(k));
    const auto it = n.find(k);
    CHECK(in.failuresOf(k) == (it == n.end() ? 0 : it->second));
  }
}

/// The failures among `outcomes`, in input order.
std::vector<flockmp::Failure> failuresOf(const auto& outcomes) {
  std::vector<flockmp::Failure> f;
  for (const auto& o : outcomes)
    if (!o) f.push_back(o.failure());
  return f;
}

/// Inputs each worker ran, from the outcomes of a task that returns getpid(): a value is the pid
/// that ran it, a failure names its worker.
inline std::map<pid_t, std::size_t> inputsByPid(const std::vector<flockmp::Outcome<std::int64_t>>& outcomes) {
  std::map<pid_t, std::size_t> n;
  for (const auto& o : outcomes) ++n[o ? static_cast<pid_t>(*o) : o.failure().pid];
  return n;
}

/// Inputs per pid as the insights' rows count them (a pid's rows summed).
inline std::map<pid_t, std::size_t> inputsByRow(const flockmp::Insights& in) {
  std::map<pid_t, std::size_t> n;
  for (const auto& w : in.workers) n[w.pid] += w.inputs;
  return n;
}

} // namespace flockmp::test
