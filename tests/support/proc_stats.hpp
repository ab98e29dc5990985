// Test helpers: what this process holds (open fds, live child processes), read from /proc.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace flockmp::test {

/// Number of open file descriptors of this process.
inline int openFdCount() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n - 1; // the directory stream itself
}

/// Number of processes (zombies included) whose parent is this process.
inline int childProcessCount() {
  int n = 0;
  const pid_t self = ::getpid();
  if (DIR* d = ::opendir("/proc")) {
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      // Fields after the command name (which may hold spaces) start after the last ')'.
      auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      char state = 0;
      int ppid = 0;
      if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == self) ++n;
    }
    ::closedir(d);
  }
  return n;
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM), or -1.
inline long statusKb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

/// This process's resident memory now, in kB.
inline long residentKb() { return statusKb("VmRSS"); }
/// This process's peak resident memory since it started or since resetPeakResident, in kB.
inline long peakResidentKb() { return statusKb("VmHWM"); }
/// Resets the peak (VmHWM) to the current resident size; false when the kernel refused.
inline bool resetPeakResident() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

/// True while a process with this pid exists (zombies count).
inline bool processExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

} // namespace flockmp::test
