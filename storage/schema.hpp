#pragma once
// PostgreSQL schema of Parley, as numbered migrations applied at start-up.

#include <string>
#include <vector>

#include <pqxx/connection>

namespace parley::storage {

struct migration {
  int version;
  const char* name;
  const char* sql;
};

/// Every migration, ascending; never edit one that has shipped, append.
const std::vector<migration>& migrations();

/// Applies the missing migrations in one transaction under an advisory lock,
/// so several nodes may start at once. Returns the schema version reached.
/// Throws on failure.
int migrate(pqxx::connection& c);

} // namespace parley::storage
