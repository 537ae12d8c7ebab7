# Imported targets for Parley's Debian-packaged dependencies.
find_package(Threads REQUIRED)

# CAF 0.17 ships no CMake config and no pkg-config file.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIB caf_core REQUIRED)
find_library(CAF_IO_LIB caf_io REQUIRED)
# CAF's OpenSSL module (mutual TLS on the cluster port); libcaf-dev ships its
# headers, libcaf-openssl0.17 the library.
find_library(CAF_OPENSSL_LIB caf_openssl REQUIRED)
if(NOT TARGET caf::core)
  add_library(caf::core UNKNOWN IMPORTED)
  set_target_properties(caf::core PROPERTIES IMPORTED_LOCATION ${CAF_CORE_LIB}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  add_library(caf::io UNKNOWN IMPORTED)
  set_target_properties(caf::io PROPERTIES IMPORTED_LOCATION ${CAF_IO_LIB}
    INTERFACE_LINK_LIBRARIES caf::core)
endif()

find_package(Boost 1.74 REQUIRED)
find_package(nlohmann_json 3.11 REQUIRED)
find_package(OpenSSL REQUIRED)
if(NOT TARGET caf::openssl)
  add_library(caf::openssl UNKNOWN IMPORTED)
  set_target_properties(caf::openssl PROPERTIES IMPORTED_LOCATION ${CAF_OPENSSL_LIB}
    INTERFACE_LINK_LIBRARIES "caf::io;OpenSSL::SSL;OpenSSL::Crypto")
endif()
find_package(PkgConfig REQUIRED)
pkg_check_modules(PQXX REQUIRED IMPORTED_TARGET libpqxx)
# libpq itself: storage/pg_conninfo.cpp parses PARLEY_PG_URL with
# PQconninfoParse, and pg_conninfo_test checks the strings it builds with it.
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
# Metrics registry and Prometheus text serializer (core only; Parley serves
# /metrics on its own HTTP listener).
find_package(prometheus-cpp CONFIG REQUIRED COMPONENTS core)
# Structured logs (runtime/telemetry/log.cpp only): the compiled library, on libfmt.
find_package(spdlog 1.10 CONFIG REQUIRED)
find_package(GTest REQUIRED)
include(GoogleTest)
