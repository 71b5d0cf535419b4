#include "ringtrain/dist/connect_store.h"

#include <cstdint>

#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/memory_store.h"
#include "ringtrain/dist/tcp_store.h"

namespace ringtrain::dist {
namespace {

// Owns the client (and, on a rank that hosts it, the server) and scopes every key under "r<restart>/".
class JobStore final : public Store {
 public:
  JobStore(std::unique_ptr<TcpStoreServer> server, std::unique_ptr<TcpStoreClient> client, int restart_count)
      : server_(std::move(server)), client_(std::move(client)),
        scoped_("r" + std::to_string(restart_count), *client_) {}
  ~JobStore() override {
    // The hosting rank keeps the store up until it is itself done; stopping it disconnects the others.
    client_.reset();
    if (server_) server_->stop();
  }

  void set(const std::string& key, const Bytes& value) override { scoped_.set(key, value); }
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override { return scoped_.get(key, timeout); }
  int64_t add(const std::string& key, int64_t delta) override { return scoped_.add(key, delta); }
  Bytes compareSet(const std::string& key, const Bytes& expected, const Bytes& desired) override {
    return scoped_.compareSet(key, expected, desired);
  }
  bool check(const std::vector<std::string>& keys) override { return scoped_.check(keys); }
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override {
    scoped_.wait(keys, timeout);
  }
  bool deleteKey(const std::string& key) override { return scoped_.deleteKey(key); }

 private:
  std::unique_ptr<TcpStoreServer> server_;
  std::unique_ptr<TcpStoreClient> client_;
  PrefixStore scoped_;  // refers to *client_
};

}  // namespace

std::unique_ptr<Store> connectStore(const ProcessInfo& info, std::chrono::milliseconds timeout) {
  // A job of one (alone, or `mpirun -np 1`, RANK=0 WORLD_SIZE=1) has nobody to meet: its store stays in
  // memory, so it takes no port (two such jobs on one machine, or `ringtrain eval` beside a running job,
  // used to fail with "address in use"). Under ringrun the store is the launcher's.
  if (info.launcher != "ringrun" && info.world_size == 1) {
    debug("single process: the job's store is in memory");
    return std::make_unique<MemoryStore>();
  }
  // torchrun's own store already listens on MASTER_PORT: ours goes next to it.
  const int port_wanted = info.launcher == "torchrun" && info.master_port > 0 ? info.master_port + 1 : info.master_port;
  RT_CHECK_T(ConfigError, port_wanted <= 65535, "the store port ", port_wanted, " is out of range");
  std::unique_ptr<TcpStoreServer> server;
  if (info.launcher != "ringrun" && info.rank == 0) {
    server = std::make_unique<TcpStoreServer>(info.master_addr, port_wanted, info.job_token);
    debug("hosting the job's store at {}:{}", info.master_addr, server->port());
  }
  const int port = server ? server->port() : port_wanted;
  auto client = std::make_unique<TcpStoreClient>(info.master_addr, port, info.job_token, timeout,
                                                 std::max(timeout, kDefaultStoreOpTimeout));
  return std::make_unique<JobStore>(std::move(server), std::move(client), info.restart_count);
}

}  // namespace ringtrain::dist
