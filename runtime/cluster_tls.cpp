#include "runtime/cluster_tls.hpp"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>

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
