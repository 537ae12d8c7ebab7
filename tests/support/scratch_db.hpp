#pragma once
// A fresh PostgreSQL database for one test, created on the server named by
// PARLEY_TEST_PG_URL (scripts/test starts it) and dropped afterwards.

#include <cstdlib>
#include <stdexcept>
#include <string>

#include <pqxx/pqxx>
#include <unistd.h>

namespace parley::test {

class scratch_db {
public:
  scratch_db() : scratch_db(shared_admin_url()) {}

  /// A scratch database on the server of `admin_url` (e.g. a test's own
  /// pg_server).
  explicit scratch_db(std::string admin_url) : admin_(std::move(admin_url)) {
    static int counter = 0;
    name_ = "parley_t_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
    pqxx::connection c{admin_};
    pqxx::nontransaction n{c};
    n.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    n.exec("CREATE DATABASE " + name_);
    url_ = admin_ + " dbname=" + name_;
  }
  ~scratch_db() {
    try {
      pqxx::connection c{admin_};
      pqxx::nontransaction n{c};
      n.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (...) {
    }
  }
  scratch_db(const scratch_db&) = delete;
  scratch_db& operator=(const scratch_db&) = delete;

  /// Connection string of the scratch database.
  const std::string& url() const { return url_; }

  /// Runs a query and returns its result (for assertions on stored state).
  pqxx::result query(const std::string& sql) const {
    pqxx::connection c{url_};
    pqxx::nontransaction n{c};
    return n.exec(sql);
  }

private:
  static std::string shared_admin_url() {
    auto* admin = std::getenv("PARLEY_TEST_PG_URL");
    if (!admin || !*admin)
      throw std::runtime_error("PARLEY_TEST_PG_URL is not set: run the tests through scripts/test");
    return admin;
  }

  std::string admin_, name_, url_;
};

} // namespace parley::test
