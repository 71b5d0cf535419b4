// A rank that joins the job's store, meets every other rank there, and leaves: the smallest program a
// launcher can start. scripts/bench-launch.sh times `ringrun` starting four of these against torchrun
// starting four Python processes that do init_process_group("gloo") + destroy_process_group().
// Prints "rank R of N met all" on success; exit codes as in ringtrain (3 store failure, 4 timeout).
#include <chrono>
#include <cstdio>
#include <string>

#include "ringtrain/core/error.h"
#include "ringtrain/dist/connect_store.h"

int main() {
  using namespace ringtrain;
  try {
    const dist::ProcessInfo info = dist::detectProcessInfo(dist::processEnvironment(), config::CommOptions{});
    auto store = dist::connectStore(info, std::chrono::seconds(60));
    store->set("joined/" + std::to_string(info.rank), dist::toBytes("1"));
    std::vector<std::string> keys;
    for (int r = 0; r < info.world_size; ++r) keys.push_back("joined/" + std::to_string(r));
    store->wait(keys, std::chrono::seconds(60));
    // Rank 0 may host the store (outside ringrun): it leaves last, once everyone has met.
    if (store->add("left", 1) == info.world_size) store->set("all-left", dist::toBytes("1"));
    if (info.rank == 0) store->wait({"all-left"}, std::chrono::seconds(60));
    std::printf("rank %d of %d met all\n", info.rank, info.world_size);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "store_join: %s\n", e.what());
    return e.exitCode();
  }
}
