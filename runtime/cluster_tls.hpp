#pragma once
// Mutual TLS on the cluster port: the check of the three PEM files a node
// is given (PARLEY_CLUSTER_TLS_CERT, _KEY, _CA) before CAF's OpenSSL module
// uses them. CAF reads them again for every connection, on its network
// thread, and a file it cannot load there ends the process; so a node
// refuses to start with files that would fail.

#include <string>

namespace parley {

/// The node's cluster identity as CAF reads it: private copies of the
/// operator's files that are replaced only by a set that passed
/// check_cluster_tls. CAF 0.17 reads its files again for every cluster
/// connection and ends the process when one does not load, so a key
/// renewed badly (missing, not matching, half written) must never reach the
/// paths it reads. The certificate chain and the key go into one file
/// (OpenSSL's PEM readers skip blocks of other kinds), replaced by one
/// rename: CAF can never read a certificate with another one's key.
class cluster_tls_files {
public:
  /// Copies the three files into a new private directory (0700, under
  /// TMPDIR or /tmp, named `parley-tls-<pid>-XXXXXX` and locked while
  /// this node lives, made under a hidden name and renamed once locked; the
  /// destructor removes it, and a node starting removes those no process
  /// holds locked, left by a node that was killed). Throws std::runtime_error naming the
  /// setting when the files do not pass check_cluster_tls, or when the
  /// copies cannot be made.
  cluster_tls_files(std::string cert_file, std::string key_file, std::string ca_file);
  ~cluster_tls_files();
  cluster_tls_files(const cluster_tls_files&) = delete;
  cluster_tls_files& operator=(const cluster_tls_files&) = delete;

  /// What CAF is given: the certificate chain and key in one file, and the CA.
  const std::string& identity() const { return identity_; }
  const std::string& ca() const { return ca_; }

  /// Reads the operator's files again; when their content changed and they
  /// pass the check, replaces the copies (the next cluster connection uses
  /// them). Returns "" when nothing changed, "applied" when new files were
  /// taken, else one line that names the bad setting (the copies stay as
  /// they were; the same bad content is reported once). Blocking file I/O:
  /// call it from a thread of its own, not from CAF's or asio's.
  std::string refresh();

private:
  std::string cert_file_, key_file_, ca_file_;
  std::string dir_, identity_, ca_;
  int lock_fd_ = -1; ///< the directory, locked while this node lives (stale copies are unlocked)
  std::string seen_; ///< the content last read (cert, key, CA), applied or refused
};

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
