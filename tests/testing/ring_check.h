// Closed-form allreduce checks shared by the ring tests (thread double, Gloo threads, MPI processes):
// element i of rank r holds a small integer that every dtype and every partial sum represents exactly, so
// the expected result of each op is known in closed form, rounded the way the dtype rounds an average.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "ringtrain/comm/communicator.h"

namespace ringtrain::testing {

double ringValue(int rank, size_t i);
void storeValue(void* data, size_t i, comm::DataType type, double v);
double loadValue(const void* data, size_t i, comm::DataType type);
// What every rank must hold at element i after op over `ranks` ranks.
double expectedValue(size_t i, int ranks, comm::DataType type, comm::ReduceOp op);

// The dtypes, ops and counts the ring must get right (0, 1, fewer than ranks, odd, several segments).
const std::vector<comm::DataType>& ringTypes();
const std::vector<comm::ReduceOp>& ringOps();
const std::vector<size_t>& ringCounts();

// Runs allreduce(buffer, op) over every dtype x op x count <= max_count, in the same order on every rank,
// and throws ringtrain::Error describing the first wrong element.
void checkRingCases(comm::Communicator& comm, const std::function<void(comm::Buffer, comm::ReduceOp)>& allreduce,
                    size_t max_count = ~size_t{0});

}  // namespace ringtrain::testing
