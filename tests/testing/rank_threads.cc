#include "testing/rank_threads.h"

#include <gtest/gtest.h>

#include <exception>
#include <memory>
#include <thread>

#include "ringtrain/comm/factory.h"
#include "ringtrain/core/error.h"
#include "ringtrain/dist/memory_store.h"
#include "ringtrain/dist/process_info.h"

namespace ringtrain::testing {

std::vector<RankResult> runRankThreads(int world, const std::function<void(int rank)>& body) {
  std::vector<RankResult> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (const TimeoutError& e) {
        results[r] = {e.what(), "TimeoutError"};
      } catch (const CommError& e) {
        results[r] = {e.what(), "CommError"};
      } catch (const ConfigError& e) {
        results[r] = {e.what(), "ConfigError"};
      } catch (const Error& e) {
        results[r] = {e.what(), "Error"};
      } catch (const std::exception& e) {
        results[r] = {e.what(), "std::exception"};
      }
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

std::vector<RankResult> runWithCommunicators(int world, const config::CommOptions& options,
                                             const std::function<void(comm::Communicator&)>& body,
                                             dist::Store* store) {
  std::unique_ptr<dist::MemoryStore> own;
  if (store == nullptr) {
    own = std::make_unique<dist::MemoryStore>();
    store = own.get();
  }
  return runRankThreads(world, [&](int rank) {
    dist::ProcessInfo process;
    process.rank = rank;
    process.world_size = world;
    auto comm = comm::makeCommunicator(options, process, *store);
    body(*comm);
  });
}

void expectAllOk(const std::vector<RankResult>& results) {
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].error_type << ": " << results[r].error;
  }
}

config::CommOptions testCommOptions(double timeout_s) {
  config::CommOptions options;
  options.backend = "gloo";
  options.timeout_s = timeout_s;
  options.check_collectives = true;
  return options;
}

}  // namespace ringtrain::testing
