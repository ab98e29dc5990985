// Test helper: a throw-away PostgreSQL cluster, started by the test itself. initdb into a
// temporary directory (as the `postgres` user when running as root), pg_ctl start on a free
// loopback port with fsync off, createdb; stopped (`pg_ctl stop -m immediate`) and removed by the
// destructor. If the test binary is killed by a signal it can catch (the deadlock guard's
// SIGALRM, SIGTERM, SIGINT), the postmaster is told to shut down immediately before the binary
// dies.
#pragma once

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace flockmp::test {

class PgCluster {
public:
  static constexpr const char* user = "flock";
  static constexpr const char* password = "flock-secret";
  static constexpr const char* database = "flocktest";

  /// True when the server binaries this test was configured with are still there.
  static bool available() {
    return std::filesystem::exists(std::filesystem::path(FLOCK_PG_BINDIR) / "initdb");
  }

  PgCluster() {
    std::string t = (std::filesystem::temp_directory_path() / "flock-pg-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = t;
    try {
      if (::geteuid() == 0) {
        // initdb refuses to run as root: the cluster belongs to the postgres user.
        const passwd* pw = ::getpwnam("postgres");
        if (!pw)
          throw std::runtime_error(
              "running as root and there is no postgres user to own the cluster");
        asUser_ = "runuser -u postgres -- ";
        if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
          throw std::runtime_error("chown of the cluster directory failed");
      }
      { std::ofstream(dir_ / "pwfile") << password << "\n"; }
      if (::geteuid() == 0) {
        const passwd* pw = ::getpwnam("postgres");
        if (::chown((dir_ / "pwfile").c_str(), pw->pw_uid, pw->pw_gid) != 0)
          throw std::runtime_error("chown of pwfile failed");
      }
      port_ = freePort();
      run(fmt::format(
          "initdb -D {}/data -U {} --pwfile={}/pwfile --auth-local=trust --auth-host=scram-sha-256 "
          "-E UTF8 --no-sync",
          dir_.string(), user, dir_.string()));
      pgCtl("start");
      started_ = true;
      run(fmt::format("createdb -h {} -p {} -U {} {}", dir_.string(), port_, user, database));
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~PgCluster() { cleanup(); }
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  /// A libpq connection string for the test database over TCP (password authentication).
  [[nodiscard]] std::string conninfo(const std::string& pass = password, int port = 0) const {
    return fmt::format("host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=10",
                       port ? port : port_, user, pass, database);
  }
  [[nodiscard]] int port() const noexcept { return port_; }

  /// Restart the server (fast shutdown: every open connection is terminated).
  void restart() { pgCtl("restart -m fast"); }

  /// Stop the server (fast shutdown: every open connection is terminated; returns once it is
  /// down). start() brings it back on the same port.
  void stop() {
    run(fmt::format("pg_ctl -D {}/data -m fast -w -t 60 stop", dir_.string()));
    started_ = false;
    postmaster() = 0; // gone: the signal handler must not signal a pid that may be reused
  }
  /// Start the server again after stop(); returns once it accepts connections.
  void start() {
    pgCtl("start");
    started_ = true;
  }
  /// Whether the server is running (between stop() and start() it is not).
  [[nodiscard]] bool running() const noexcept { return started_; }

  /// A port nobody listens on (bound, then released).
  static int freePort() {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("no free loopback port");
    ::close(s);
    return ntohs(a.sin_port);
  }

private:
  void pgCtl(const std::string& action) {
    run(fmt::format("pg_ctl -D {0}/data -l {0}/log -w -t 60 -o \"-F -k {0} -c "
                    "listen_addresses=127.0.0.1 -p {1}\" {2}",
                    dir_.string(), port_, action));
    rememberPostmaster();
  }

  /// Run a server binary (as the cluster's owner), from the cluster directory; throws with the log
  /// on failure.
  void run(const std::string& command) const {
    const auto full = fmt::format("cd {} && {}{}/{} >>{}/commands.log 2>&1", dir_.string(), asUser_,
                                  FLOCK_PG_BINDIR, command, dir_.string());
    if (std::system(full.c_str()) != 0) {
      std::string log;
      for (const char* f : {"commands.log", "log"}) {
        std::ifstream in(dir_ / f);
        log += std::string(std::istreambuf_iterator<char>(in), {});
      }
      throw std::runtime_error(fmt::format("PostgreSQL command failed: {}\n{}", full, log));
    }
  }

  /// Note the postmaster's pid for the signal handler (first line of postmaster.pid).
  void rememberPostmaster() {
    std::ifstream in(dir_ / "data" / "postmaster.pid");
    int pid = 0;
    in >> pid;
    postmaster() = pid;
    static bool installed = false;
    if (!installed) {
      installed = true;
      for (int sig : {SIGALRM, SIGTERM, SIGINT}) {
        struct sigaction sa {};
        sa.sa_handler = &onFatalSignal;
        sa.sa_flags = SA_RESETHAND;
        ::sigemptyset(&sa.sa_mask);
        ::sigaction(sig, &sa, nullptr);
      }
    }
  }

  static volatile sig_atomic_t& postmaster() {
    static volatile sig_atomic_t pid = 0;
    return pid;
  }

  /// Async-signal-safe: SIGQUIT is PostgreSQL's immediate shutdown; then die of the signal.
  static void onFatalSignal(int sig) {
    if (postmaster() > 0) ::kill(postmaster(), SIGQUIT);
    ::raise(sig);
  }

  void cleanup() noexcept {
    if (started_) {
      try {
        run(fmt::format("pg_ctl -D {}/data -m immediate -w stop", dir_.string()));
      } catch (...) {
        if (postmaster() > 0) ::kill(postmaster(), SIGQUIT);
      }
      started_ = false;
    }
    postmaster() = 0;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::filesystem::path dir_;
  std::string asUser_;
  int port_ = 0;
  bool started_ = false;
};

} // namespace flockmp::test
