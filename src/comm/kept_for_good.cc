#include "kept_for_good.h"

#include <mutex>
#include <utility>
#include <vector>

namespace ringtrain::comm {
namespace {
std::mutex g_kept_mu;
auto* g_kept = new std::vector<std::shared_ptr<const void>>();  // guarded by g_kept_mu; never freed
}  // namespace

void keepForGood(std::shared_ptr<const void> owner) {
  if (!owner) return;
  std::lock_guard<std::mutex> lock(g_kept_mu);
  g_kept->push_back(std::move(owner));
}

}  // namespace ringtrain::comm
