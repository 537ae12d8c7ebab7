#include "runtime/cluster_tls.hpp"

#include <dlfcn.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio> // renameat2
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

namespace parley {

namespace {

/// OpenSSL's queued errors as one line, and the queue emptied.
std::string ssl_errors() {
  std::string out;
  while (auto e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string{buf};
  }
  return out.empty() ? "no detail" : out;
}

/// Refuses to decrypt: CAF would ask for the passphrase on a terminal at
/// every connection, so an encrypted key must fail here, not prompt.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

using ctx_ptr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
using store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)>;

} // namespace

std::string check_cluster_tls(const std::string& cert_file, const std::string& key_file,
                              const std::string& ca_file) {
  for (auto& [name, path] : {std::pair{"PARLEY_CLUSTER_TLS_CERT", &cert_file},
                             std::pair{"PARLEY_CLUSTER_TLS_KEY", &key_file},
                             std::pair{"PARLEY_CLUSTER_TLS_CA", &ca_file}})
    if (!std::ifstream{*path})
      return std::string{name} + ": cannot read '" + *path + "'";
  ERR_clear_error();
  ctx_ptr ctx{SSL_CTX_new(TLS_method()), SSL_CTX_free};
  if (!ctx)
    return "PARLEY_CLUSTER_TLS_CERT: cannot create an OpenSSL context (" + ssl_errors() + ")";
  SSL_CTX_set_default_passwd_cb(ctx.get(), no_passphrase);
  // The same calls, in the same order, as CAF's session (CAF 0.17.6
  // libcaf_openssl/src/openssl/session.cpp, create_ssl_context).
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1)
    return "PARLEY_CLUSTER_TLS_CERT: '" + cert_file + "' holds no PEM certificate (" +
           ssl_errors() + ")";
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1)
    return "PARLEY_CLUSTER_TLS_KEY: '" + key_file +
           "' is not the unencrypted PEM private key of PARLEY_CLUSTER_TLS_CERT (" + ssl_errors() +
           ")";
  if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
    return "PARLEY_CLUSTER_TLS_CA: '" + ca_file + "' holds no PEM certificate (" + ssl_errors() +
           ")";

  // Peers verify this certificate as a TLS server (the node dialled) and as
  // a client (the node dialling), each against the same CA.
  X509* leaf = SSL_CTX_get0_certificate(ctx.get());
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(ctx.get(), &chain);
  for (const char* role : {"ssl_server", "ssl_client"}) {
    store_ctx_ptr vctx{X509_STORE_CTX_new(), X509_STORE_CTX_free};
    if (!vctx ||
        X509_STORE_CTX_init(vctx.get(), SSL_CTX_get_cert_store(ctx.get()), leaf, chain) != 1 ||
        X509_STORE_CTX_set_default(vctx.get(), role) != 1)
      return "PARLEY_CLUSTER_TLS_CERT: cannot verify '" + cert_file + "' (" + ssl_errors() + ")";
    if (X509_verify_cert(vctx.get()) != 1) {
      auto why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx.get()));
      ERR_clear_error();
      return "PARLEY_CLUSTER_TLS_CERT: '" + cert_file +
             "' does not verify against PARLEY_CLUSTER_TLS_CA '" + ca_file + "' as a TLS " +
             (role == std::string{"ssl_server"} ? "server" : "client") + " certificate: " + why;
    }
  }
  return {};
}

namespace {

/// The whole file, or nullopt when it cannot be read.
std::optional<std::string> slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad())
    return std::nullopt;
  return out.str();
}

/// Writes `text` to `path` (created 0600, truncated); false on failure.
bool write_private(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return false;
  std::size_t done = 0;
  while (done < text.size()) {
    auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0;
}

/// The private directories of the copies are `parley-tls-<pid>-XXXXXX`,
/// each locked (flock) by its node for as long as the node lives: the
/// kernel lets the lock go when the process ends, however it ends.
constexpr const char* copies_prefix = "parley-tls-";
/// The copies: CAF's two files first, then their replacements in the making.
const char* const copy_names[] = {"identity.pem", "ca.pem", "identity.pem.new", "ca.pem.new"};

/// Removes the copies that nodes ended without their destructor (SIGKILL,
/// a crash) left under `tmp`: this user's directories of our name that no
/// process holds locked. They hold a copy of the node's private key. (The
/// lock, not the pid in the name, decides: pids are per namespace, and a
/// node in another container may share the directory.)
void remove_stale_copies(const std::string& tmp) {
  DIR* d = ::opendir(tmp.c_str());
  if (!d)
    return;
  const std::string prefix = copies_prefix;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0)
      continue;
    auto dir = tmp + "/" + name;
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::getuid())
      continue;
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) { // nobody holds it: its node is gone
      for (auto* f : copy_names)
        ::unlink((dir + "/" + f).c_str());
      ::rmdir(dir.c_str());
    }
    ::close(fd);
  }
  ::closedir(d);
}

/// A PEM text ends with a line break before the next one is appended.
std::string with_newline(std::string s) {
  if (!s.empty() && s.back() != '\n')
    s += '\n';
  return s;
}

} // namespace

cluster_tls_files::cluster_tls_files(std::string cert_file, std::string key_file,
                                     std::string ca_file)
  : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)), ca_file_(std::move(ca_file)) {
  if (auto why = check_cluster_tls(cert_file_, key_file_, ca_file_); !why.empty())
    throw std::runtime_error(why);
  const char* tmp_env = std::getenv("TMPDIR");
  const std::string tmp = tmp_env && *tmp_env ? tmp_env : "/tmp";
  remove_stale_copies(tmp);
  // Made under a hidden name that the clean-up of a node starting at this
  // moment does not look at, locked, then renamed into view: a cleaner
  // never finds it unlocked. (A node killed in between leaves an empty
  // hidden directory, no key.)
  std::string pattern =
    tmp + "/." + copies_prefix + std::to_string(::getpid()) + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    throw std::runtime_error("PARLEY_CLUSTER_TLS_KEY: cannot make a private directory for the "
                             "cluster identity under " + pattern.substr(0, pattern.rfind('/')) +
                             " (" + std::strerror(errno) + "); set TMPDIR to a writable directory");
  const std::string making = buf.data();
  dir_ = tmp + "/" + making.substr(tmp.size() + 2);
  lock_fd_ = ::open(making.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool ready = lock_fd_ >= 0 && ::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0;
  if (ready) {
    ready = ::renameat2(AT_FDCWD, making.c_str(), AT_FDCWD, dir_.c_str(), RENAME_NOREPLACE) == 0;
    if (!ready && errno == EINVAL) // a file system without RENAME_NOREPLACE
      ready = ::rename(making.c_str(), dir_.c_str()) == 0;
  }
  if (!ready) {
    auto why = std::string{std::strerror(errno)};
    if (lock_fd_ >= 0)
      ::close(lock_fd_);
    ::rmdir(making.c_str());
    throw std::runtime_error("PARLEY_CLUSTER_TLS_KEY: cannot lock the private directory '" +
                             making + "' (" + why + ")");
  }
  identity_ = dir_ + "/" + copy_names[0];
  ca_ = dir_ + "/" + copy_names[1];
  auto applied = refresh();
  if (applied != "applied") {
    ::rmdir(dir_.c_str());
    ::close(lock_fd_);
    throw std::runtime_error(applied.empty() ? "PARLEY_CLUSTER_TLS_CERT: cannot copy the files"
                                             : applied);
  }
}

cluster_tls_files::~cluster_tls_files() {
  for (auto* f : copy_names)
    ::unlink((dir_ + "/" + f).c_str());
  ::rmdir(dir_.c_str());
  ::close(lock_fd_);
}

std::string cluster_tls_files::refresh() {
  auto cert = slurp(cert_file_);
  auto key = slurp(key_file_);
  auto ca = slurp(ca_file_);
  std::string content = (cert ? *cert : "") + '\0' + (key ? *key : "") + '\0' + (ca ? *ca : "");
  if (content == seen_)
    return {};
  seen_ = content;
  if (!cert || !key || !ca) {
    auto [name, path] = !cert ? std::pair{"PARLEY_CLUSTER_TLS_CERT", &cert_file_}
                        : !key ? std::pair{"PARLEY_CLUSTER_TLS_KEY", &key_file_}
                               : std::pair{"PARLEY_CLUSTER_TLS_CA", &ca_file_};
    return std::string{name} + ": cannot read '" + *path + "'";
  }
  // The new set is written beside the copies and checked there, so that
  // what is checked is exactly what CAF will read.
  auto identity_new = identity_ + ".new";
  auto ca_new = ca_ + ".new";
  if (!write_private(identity_new, with_newline(*key) + *cert) || !write_private(ca_new, *ca))
    return std::string{"PARLEY_CLUSTER_TLS_CERT: cannot write the private copies in '"} + dir_ +
           "' (" + std::strerror(errno) + ")";
  auto why = check_cluster_tls(identity_new, identity_new, ca_new);
  if (!why.empty()) {
    ::unlink(identity_new.c_str());
    ::unlink(ca_new.c_str());
    // The check read the copies: name the operator's files instead.
    auto& identity_is = why.rfind("PARLEY_CLUSTER_TLS_KEY", 0) == 0 ? key_file_ : cert_file_;
    for (auto& [from, to] : {std::pair{&identity_new, &identity_is}, std::pair{&ca_new, &ca_file_}})
      for (auto at = why.find(*from); at != std::string::npos; at = why.find(*from))
        why.replace(at, from->size(), *to);
    return why;
  }
  // The CA first: a connection made between the two renames checks the old
  // identity against the new CA (its handshake fails, nothing ends); the
  // certificate and its key change together.
  if (::rename(ca_new.c_str(), ca_.c_str()) != 0 ||
      ::rename(identity_new.c_str(), identity_.c_str()) != 0)
    return std::string{"PARLEY_CLUSTER_TLS_CERT: cannot replace the private copies in '"} + dir_ +
           "' (" + std::strerror(errno) + ")";
  return "applied";
}

bool ssl_error_queue_guard_active() {
  return dlsym(RTLD_DEFAULT, "SSL_read") == reinterpret_cast<void*>(&SSL_read) &&
         reinterpret_cast<void*>(&SSL_read) != dlsym(RTLD_NEXT, "SSL_read");
}

} // namespace parley

// The wrappers: defined in the executable, they take precedence over
// libssl's for every library of the process (CAF's OpenSSL module, libpq,
// Boost.Asio); each empties the error queue, then calls libssl's function.
// libpq and Boost.Asio empty it themselves already, so only CAF's calls
// change. See ssl_error_queue_guard_active.
namespace {

template <class Fn>
Fn* next_ssl_function(std::atomic<Fn*>& cache, const char* name) {
  auto* f = cache.load(std::memory_order_acquire);
  if (!f) {
    f = reinterpret_cast<Fn*>(dlsym(RTLD_NEXT, name));
    if (!f)
      std::abort(); // libssl is linked: its functions cannot be missing
    cache.store(f, std::memory_order_release);
  }
  return f;
}

std::atomic<int (*)(SSL*, void*, int)> next_read{nullptr};
std::atomic<int (*)(SSL*, const void*, int)> next_write{nullptr};
std::atomic<int (*)(SSL*)> next_accept{nullptr};
std::atomic<int (*)(SSL*)> next_connect{nullptr};

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  auto f = next_ssl_function(next_read, "SSL_read");
  ERR_clear_error();
  return f(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  auto f = next_ssl_function(next_write, "SSL_write");
  ERR_clear_error();
  return f(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  auto f = next_ssl_function(next_accept, "SSL_accept");
  ERR_clear_error();
  return f(ssl);
}

int SSL_connect(SSL* ssl) {
  auto f = next_ssl_function(next_connect, "SSL_connect");
  ERR_clear_error();
  return f(ssl);
}

} // extern "C"
