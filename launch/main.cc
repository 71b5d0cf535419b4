// ringrun: see launch/agent.h for how a job runs and launch/launch_options.cc for the options.
#include <fcntl.h>

#include <cerrno>
#include <exception>

#include "agent.h"
#include "console.h"
#include "ringtrain/core/error.h"
#include "ringtrain/core/logging.h"
#include "ringtrain/dist/process_info.h"

int main(int argc, char** argv) {
  using namespace ringtrain;
  // A closed stdin, stdout or stderr would be taken by the first file ringrun opens (its signalfd, the
  // store's socket), and its messages written there: /dev/null takes the place.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
  }
  // Both streams' writers exist from the start, stderr's first: it outlives stdout's, which may report to it.
  launch::consoleErr();
  launch::consoleOut();
  int code = kExitOk;
  try {
    log::init();
    log::useSink(launch::consoleLogSink());  // no log line may block on a stalled stderr
    auto options = launch::parseLaunchOptions(argc, argv, dist::processEnvironment());
    if (options) code = launch::runAgent(*options);
  } catch (const Error& e) {
    launch::sayError(e.what());
    code = e.exitCode();
  } catch (const std::exception& e) {
    launch::sayError(e.what());
    code = kExitFailure;
  }
  launch::finishOutput(code);
  return code;
}
