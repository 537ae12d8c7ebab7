#pragma once
// API key material: generation and hashing (OpenSSL). Only hashes are stored.

#include <string>
#include <string_view>

namespace parley {

/// A new secret API key: "pk_" followed by 40 hex digits (160 random bits).
std::string generate_api_key();

/// The public prefix of a key that identifies it for revocation ("pk_" + 8 hex).
std::string key_prefix(std::string_view key);

/// Lower-case hex SHA-256 of a key, as stored.
std::string hash_key(std::string_view key);

/// `n` random bytes as hex (for ids and tokens).
std::string random_hex(std::size_t n_bytes);

/// Compares secrets in time independent of where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

} // namespace parley
