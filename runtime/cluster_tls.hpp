#pragma once
// Mutual TLS on the cluster port: the check of the three PEM files a node
// is given (PARLEY_CLUSTER_TLS_CERT, _KEY, _CA) before CAF's OpenSSL module
// uses them. CAF reads them again for every connection, on its network
// thread, and a file it cannot load there ends the process; so a node
// refuses to start with files that would fail.

#include <string>

namespace parley {

/// Loads the files as the cluster port will and checks that they make a
/// usable identity: the CA file holds at least one certificate, the
/// certificate (chain) and the unencrypted private key load and match, and
/// the certificate chains to the CA for use as both TLS server and client.
/// Returns "" when they do, else one line that names the bad setting.
/// Reads files only; thread-safe.
std::string check_cluster_tls(const std::string& cert_file, const std::string& key_file,
                              const std::string& ca_file);

/// True when this process's SSL_read, SSL_write, SSL_accept and SSL_connect
/// are Parley's wrappers (cluster_tls.cpp), which empty the calling thread's
/// OpenSSL error queue before each call as OpenSSL requires. CAF 0.17.6's
/// OpenSSL session never empties it (the Debian build compiles out the log
/// line that would), so one failed handshake, such as a stranger's, left an
/// error behind on CAF's network thread and the next ordinary "would block"
/// on a member's connection read as fatal: members dropped each other.
bool ssl_error_queue_guard_active();

} // namespace parley
