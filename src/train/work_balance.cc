#include "train/work_balance.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "ringtrain/comm/communicator.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/data/batch_loader.h"

namespace ringtrain::train {
namespace {

bool usable(double v) { return std::isfinite(v) && v > 0.0; }

// The upper median of `values` (not empty), which it reorders.
double medianOf(std::vector<double>& values) {
  std::nth_element(values.begin(), values.begin() + static_cast<long>(values.size() / 2), values.end());
  return values[values.size() / 2];
}

// RINGTRAIN_BALANCE_SLOWDOWN=R:F makes rank R count its time F times over, as a rank on a slower CPU would:
// what the tests use to move the cuts the same way on any machine. Said in the log where it acts: left set
// by mistake, it would skew a real job's shares.
double slowdownOf(int rank, int world) {
  const char* v = std::getenv("RINGTRAIN_BALANCE_SLOWDOWN");
  if (v == nullptr || *v == '\0') return 1.0;
  int r = -1;
  double f = 0.0;
  char tail = 0;
  RT_CHECK_T(ConfigError, std::sscanf(v, "%d:%lf%c", &r, &f, &tail) == 2 && r >= 0 && usable(f),
             "RINGTRAIN_BALANCE_SLOWDOWN '", v, "' is not RANK:FACTOR (a rank and a positive finite factor)");
  RT_CHECK_T(ConfigError, r < world, "RINGTRAIN_BALANCE_SLOWDOWN '", v, "' names rank ", r, " of a job of ", world,
             " ranks");
  if (r != rank) return 1.0;
  warn("RINGTRAIN_BALANCE_SLOWDOWN: this rank counts its forward+backward time {:g} times over (a test setting: "
       "unset it for real jobs)", f);
  return f;
}

// The fewest pairs a rank keeps: what rebalancedCuts leaves and restoreCuts requires.
int64_t fewestPairs(int64_t batch) { return std::max<int64_t>(1, batch / 4); }

std::string whyBalanceIsOff(bool asked, int world, int64_t batch) {
  if (!asked) return "";
  if (world == 1) return "one rank has nobody to share its pairs with";
  if (data::neighbourRows(batch) == 0) return "a batch of one pair cannot be cut";
  return "";
}

}  // namespace

std::vector<int64_t> evenCuts(int world_size, int64_t batch) {
  std::vector<int64_t> cuts(static_cast<size_t>(world_size) + 1);
  for (size_t j = 0; j < cuts.size(); ++j) cuts[j] = static_cast<int64_t>(j) * batch;
  return cuts;
}

std::vector<int64_t> rebalancedCuts(const std::vector<int64_t>& cuts, const std::vector<double>& seconds_per_pair,
                                    int64_t batch) {
  const size_t world = seconds_per_pair.size();
  RT_CHECK(world >= 1 && cuts.size() == world + 1, "rebalancedCuts: ", cuts.size(), " cuts for ", world, " ranks");
  std::vector<double> valid;
  for (double v : seconds_per_pair) {
    if (usable(v)) valid.push_back(v);
  }
  if (valid.empty()) return cuts;
  const double median = medianOf(valid);
  std::vector<double> speed(world);
  double total_speed = 0.0;
  for (size_t r = 0; r < world; ++r) {
    speed[r] = 1.0 / (usable(seconds_per_pair[r]) ? seconds_per_pair[r] : median);
    total_speed += speed[r];
  }
  const auto total = static_cast<double>(static_cast<int64_t>(world) * batch);
  const int64_t reach = data::neighbourRows(batch);  // how far a cut may move from j * B: what the loader holds
  const int64_t least = fewestPairs(batch);
  std::vector<int64_t> next(cuts.size());
  next.front() = 0;
  next.back() = static_cast<int64_t>(world) * batch;
  double before = 0.0;  // speed of the ranks before cut j
  for (size_t j = 1; j < world; ++j) {
    before += speed[j - 1];
    const double target = total * before / total_speed;
    // Halfway: one window's timing is noisy, and a rank's speed is measured on the share it had.
    int64_t cut = std::llround((static_cast<double>(cuts[j]) + target) / 2.0);
    const int64_t even = static_cast<int64_t>(j) * batch;
    cut = std::clamp(cut, even - reach, even + reach);
    next[j] = std::max(cut, next[j - 1] + least);  // stays <= even + reach: next[j - 1] <= even - B + reach
  }
  return next;
}

WorkBalance::WorkBalance(comm::Communicator& comm, int64_t batch, bool enabled)
    : comm_(comm),
      batch_(batch),
      why_off_(whyBalanceIsOff(enabled, comm.size(), batch)),
      enabled_(enabled && why_off_.empty()),
      rank_(comm.rank()),
      cuts_(evenCuts(comm.size(), batch)),
      slowdown_(enabled_ ? slowdownOf(comm.rank(), comm.size()) : 1.0) {}

void WorkBalance::record(double seconds, int64_t pairs) {
  step_seconds_ += seconds * slowdown_;
  step_pairs_ += pairs;
}

bool WorkBalance::endStep(int64_t step, int64_t last_step) {
  if (!enabled_) return false;
  if (step_pairs_ > 0) window_.push_back(step_seconds_ / static_cast<double>(step_pairs_));
  step_seconds_ = 0.0;
  step_pairs_ = 0;
  if (!decidesAfter(step, last_step)) return false;
  const double mine = window_.empty() ? 0.0 : medianOf(window_);  // no timing: counted as the ranks' median
  window_.clear();
  // As bytes: a host buffer every backend takes (NCCL's collectives take device memory only).
  std::vector<uint8_t> bytes(sizeof mine);
  std::memcpy(bytes.data(), &mine, sizeof mine);
  const std::vector<std::vector<uint8_t>> gathered = comm_.allgatherBytes(bytes);
  std::vector<double> all(gathered.size(), 0.0);
  for (size_t r = 0; r < gathered.size(); ++r) {
    RT_CHECK(gathered[r].size() == sizeof(double), "work balance: rank ", r, " sent ", gathered[r].size(),
             " bytes for its timing, not ", sizeof(double));
    std::memcpy(&all[r], gathered[r].data(), sizeof(double));
  }
  std::vector<int64_t> next = rebalancedCuts(cuts_, all, batch_);
  if (next == cuts_) return false;
  cuts_ = std::move(next);
  debug("work balance after step {}: {}", step, describe());
  return true;
}

std::pair<int64_t, int64_t> WorkBalance::neighbourRowsToHold() const {
  const int64_t margin = batch_ / 16;
  const int64_t own_begin = rank_ * batch_, own_end = own_begin + batch_;
  return {std::max<int64_t>(0, own_begin - begin()) + margin, std::max<int64_t>(0, begin() + count() - own_end) + margin};
}

std::string WorkBalance::encodeCuts() const {
  std::string text;
  for (size_t j = 0; j < cuts_.size(); ++j) text += (j == 0 ? "" : " ") + std::to_string(cuts_[j]);
  return text;
}

bool WorkBalance::restoreCuts(const std::string& encoded) {
  if (!enabled_) return false;
  std::istringstream in(encoded);
  std::vector<int64_t> cuts;
  for (int64_t c = 0; in >> c;) cuts.push_back(c);
  if (!in.eof() || cuts.size() != cuts_.size()) return false;
  const int64_t reach = data::neighbourRows(batch_), least = fewestPairs(batch_);
  const auto world = static_cast<int64_t>(cuts_.size()) - 1;
  if (cuts.front() != 0 || cuts.back() != world * batch_) return false;
  for (int64_t j = 1; j < world; ++j) {
    const int64_t even = j * batch_;
    if (cuts[j] < even - reach || cuts[j] > even + reach) return false;
  }
  for (size_t j = 1; j < cuts.size(); ++j) {
    if (cuts[j] - cuts[j - 1] < least) return false;
  }
  cuts_ = std::move(cuts);
  return true;
}

std::string WorkBalance::describe() const {
  std::string text;
  for (size_t r = 0; r + 1 < cuts_.size(); ++r) {
    text += fmt::format("{}rank {} {}", r == 0 ? "" : ", ", r, cuts_[r + 1] - cuts_[r]);
  }
  return text;
}

}  // namespace ringtrain::train
