// Errors are exceptions with context. Each class answers one question a caller or a test asks:
//   ConfigError  - the user's input (YAML, --set, command-line arguments) is wrong     -> exit code 2
//   DataError    - a corpus, checkpoint or model file is malformed or unreadable       -> exit code 2
//   CommError    - a peer, the store or a backend failed                                -> exit code 3
//   TimeoutError - a wait did not complete in time (a CommError: a hang is a comm fault) -> exit code 4
//   Error        - anything else ringtrain detected (a broken invariant)                -> exit code 1
// The RT_CHECK family records file, line, the condition text and the values involved.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace ringtrain {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,
  kExitBadInput = 2,
  kExitCommFailure = 3,
  kExitTimeout = 4,
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exitCode() const { return kExitFailure; }
  // A failure this rank takes on because another rank failed first ("rank 0 says why"): the launcher blames
  // the other (ringtrain/core/failure_report.h). Set through followingPeer().
  bool followsPeer() const { return follows_peer_; }
  void setFollowsPeer() { follows_peer_ = true; }

 private:
  bool follows_peer_ = false;
};

// `error`, marked as following another rank's failure: throw followingPeer(DataError("rank 0 says why")).
template <typename ErrorType>
ErrorType followingPeer(ErrorType error) {
  error.setFollowsPeer();
  return error;
}

class ConfigError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitBadInput; }
};

class DataError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitBadInput; }
};

class CommError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitCommFailure; }
};

class TimeoutError : public CommError {
 public:
  using CommError::CommError;
  int exitCode() const override { return kExitTimeout; }
};

namespace detail {

// Builds the message of a failed check: "<user message> (check failed: <cond>; <values> at <file>:<line>)".
std::string checkMessage(const char* file, int line, const char* condition, const std::string& values,
                         const std::string& message);

// The message for a check that throws ErrorType. Bad input (ConfigError, DataError) with a message of its
// own says that alone, with the compared values if any: it names the user's file, line or key, and where
// in ringtrain's sources the check sits would only be noise to them. Every other error keeps the condition
// and its place, for whoever debugs it.
template <typename ErrorType>
std::string checkMessageFor(const char* file, int line, const char* condition, const std::string& values,
                            const std::string& message) {
  if constexpr (std::is_base_of_v<ConfigError, ErrorType> || std::is_base_of_v<DataError, ErrorType>) {
    if (!message.empty()) return values.empty() ? message : message + " (" + values + ")";
  }
  return checkMessage(file, line, condition, values, message);
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename A, typename B>
std::string describePair(const char* a_text, const A& a, const char* b_text, const B& b) {
  std::ostringstream out;
  out << a_text << " = " << a << ", " << b_text << " = " << b;
  return out.str();
}

}  // namespace detail
}  // namespace ringtrain

// RT_CHECK(cond, msg...) throws ringtrain::Error; RT_CHECK_T(Type, cond, msg...) throws Type.
// The message parts are streamed (<<) together, so numbers and strings mix freely.
#define RT_CHECK_T(ErrorType, cond, ...)                                                             \
  do {                                                                                               \
    if (!(cond)) {                                                                                   \
      throw ErrorType(::ringtrain::detail::checkMessageFor<ErrorType>(__FILE__, __LINE__, #cond,    \
                                                                      std::string(),                \
                                                        ::ringtrain::detail::concat("", ##__VA_ARGS__))); \
    }                                                                                                \
  } while (0)

#define RT_CHECK(cond, ...) RT_CHECK_T(::ringtrain::Error, cond, ##__VA_ARGS__)

// Binary comparisons that also record both values: RT_CHECK_EQ(a, b, "while doing x").
#define RT_CHECK_OP_T(ErrorType, op, a, b, ...)                                                      \
  do {                                                                                               \
    const auto& rt_check_a_ = (a);                                                                   \
    const auto& rt_check_b_ = (b);                                                                   \
    if (!(rt_check_a_ op rt_check_b_)) {                                                             \
      throw ErrorType(::ringtrain::detail::checkMessageFor<ErrorType>(                               \
          __FILE__, __LINE__, #a " " #op " " #b,                                                     \
          ::ringtrain::detail::describePair(#a, rt_check_a_, #b, rt_check_b_),                      \
          ::ringtrain::detail::concat("", ##__VA_ARGS__)));                                          \
    }                                                                                                \
  } while (0)

#define RT_CHECK_EQ(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, ==, a, b, ##__VA_ARGS__)
#define RT_CHECK_NE(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, !=, a, b, ##__VA_ARGS__)
#define RT_CHECK_LT(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, <, a, b, ##__VA_ARGS__)
#define RT_CHECK_LE(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, <=, a, b, ##__VA_ARGS__)
#define RT_CHECK_GT(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, >, a, b, ##__VA_ARGS__)
#define RT_CHECK_GE(a, b, ...) RT_CHECK_OP_T(::ringtrain::Error, >=, a, b, ##__VA_ARGS__)

// Throws an error of the given type with a streamed message and no condition text.
#define RT_THROW(ErrorType, ...) throw ErrorType(::ringtrain::detail::concat(__VA_ARGS__))
