// Defaults of the Communicator interface (include/ringtrain/comm/communicator.h).
#include "ringtrain/comm/communicator.h"

#include <cstdint>

#include "ringtrain/core/error.h"

namespace ringtrain::comm {

void Communicator::allgatherBytesInto(const std::shared_ptr<ByteExchange>& exchange) {
  std::vector<std::vector<uint8_t>> all = allgatherBytes(exchange->mine);
  all.at(static_cast<size_t>(rank())).clear();
  exchange->all = std::move(all);
}

void Communicator::allToAllBytesInto(const std::shared_ptr<AllToAllExchange>& exchange) {
  std::vector<std::vector<uint8_t>> received = allToAllBytes(exchange->send);
  received.at(static_cast<size_t>(rank())).clear();
  exchange->received = std::move(received);
}

void Communicator::readPeerMemory(int peer, const void*, void*, size_t bytes) {
  RT_THROW(CommError, backendName(), ": same-host copy of ", bytes, " bytes from rank ", peer,
           " is not supported by this communicator");
}

void Communicator::postPeerNotice(int peer, PeerNotice, std::chrono::milliseconds) {
  RT_THROW(CommError, backendName(), ": same-host notices to rank ", peer, " are not supported by this communicator");
}

PeerNotice Communicator::takePeerNotice(int peer, std::chrono::milliseconds) {
  RT_THROW(CommError, backendName(), ": same-host notices from rank ", peer,
           " are not supported by this communicator");
}

}  // namespace ringtrain::comm
