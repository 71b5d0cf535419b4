// The `ringtrain` executable's handling of bad input: one line naming the problem, exit code 2.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/command.h"

namespace ringtrain {
namespace {

using ::testing::HasSubstr;
using testing::binPath;
using testing::runCommand;

std::string writeFile(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

void expectOneLineError(const testing::CommandResult& r, const std::string& expected) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr(expected));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "expected one line, got:\n" << r.err;
}

TEST(Cli, ConfigPrintsCanonicalYamlAndHash) {
  const auto r = runCommand({binPath("ringtrain"), "config", "--set", "data.window=3"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  window: 3\n"));
  EXPECT_THAT(r.out, HasSubstr("# hash: "));
}

TEST(Cli, BadInputGivesOneLineAndExitCode2) {
  const std::string dir = testing::makeTempDir("ringtrain-cli-");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", writeFile(dir, "a.yaml", "run: [1,\n")}),
                     "a.yaml:");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", writeFile(dir, "b.yaml", "data:\n  windw: 2\n")}),
                     "b.yaml:2: unknown key 'data.windw' (did you mean 'window'?)");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", writeFile(dir, "c.yaml", "data:\n  batch_size: x\n")}),
                     "c.yaml:2: data.batch_size: expected an integer, got 'x'");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", writeFile(dir, "d.yaml", "data:\n  batch_size: -1\n")}),
                     "d.yaml:2: data.batch_size: must be between 1");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", dir + "/missing.yaml"}),
                     "missing.yaml: cannot open config file");
  expectOneLineError(runCommand({binPath("ringtrain"), "config", "--set", "window=3"}),
                     "expected section.key=value");
  expectOneLineError(runCommand({binPath("ringtrain"), "no-such-command"}),
                     "ringtrain: error: unknown command 'no-such-command'; the commands are config,");
  // The same below the first level, and a missing command is named as missing (CLI11 said "A subcommand is
  // required" for both).
  expectOneLineError(runCommand({binPath("ringtrain"), "bench", "no-such-bench"}),
                     "ringtrain: error: unknown command 'no-such-bench'; the commands of ringtrain bench are allreduce "
                     "(see ringtrain bench --help)");
  expectOneLineError(runCommand({binPath("ringtrain"), "bench"}),
                     "ringtrain: error: ringtrain bench needs a command: allreduce (see ringtrain bench --help)");
  expectOneLineError(runCommand({binPath("ringtrain")}), "ringtrain: error: ringtrain needs a command: config,");
  expectOneLineError(runCommand({binPath("ringtrain"), "neighbors", "--model", "m.txt", "--item", "a", "-k", "0"}),
                     "-k: '0': give 1 or more");
  // Text that is no number is said to be none, not "not in range".
  expectOneLineError(runCommand({binPath("ringtrain"), "neighbors", "--model", "m.txt", "--item", "a", "-k", "abc"}),
                     "-k: 'abc' is not a whole number");
  expectOneLineError(runCommand({binPath("ringtrain"), "serve", "--model", "m.txt", "--port", "abc"}),
                     "--port: serve.port: expected an integer, got 'abc'");
  expectOneLineError(runCommand({binPath("ringtrain"), "serve", "--model", "m.txt", "--port", "70000"}),
                     "--port: serve.port: must be between 0 and 65535, got 70000");
  // gen-data's own options are named in their messages, not blamed on --set.
  expectOneLineError(runCommand({binPath("ringtrain"), "gen-data", "--items", "0", "--out", dir + "/gen"}),
                     "ringtrain: error: --items: synthetic.items: must be");
  expectOneLineError(runCommand({binPath("ringtrain"), "gen-data", "--seed", "99999999999999999999", "--out",
                                 dir + "/gen"}),
                     "--seed: run.seed:");
  expectOneLineError(runCommand({binPath("ringtrain"), "gen-data", "--alpha", "x", "--out", dir + "/gen"}),
                     "--alpha: synthetic.alpha:");
  expectOneLineError(runCommand({binPath("ringtrain"), "gen-data", "--items", "10", "--categories", "20", "--out",
                                 dir + "/gen"}),
                     "--categories: synthetic.categories: 20 categories for synthetic.items 10 (gen-data --items): "
                     "at most one category per item");
  expectOneLineError(runCommand({binPath("ringtrain"), "gen-data", "--out", ""}),
                     "no output directory given for the synthetic corpus (gen-data --out)");
  // A directory where a file is wanted is said to be one, not "an empty file".
  expectOneLineError(runCommand({binPath("ringtrain"), "neighbors", "--model", dir, "--item", "a"}),
                     dir + ": is a directory, not a word2vec file");
}

// A file-size limit (ulimit -f) is a write error naming the file, exit 2, and no temporary left: not a
// silent SIGXFSZ death beside a half-written temp file.
TEST(Cli, AFileSizeLimitIsAWriteErrorNamingTheFile) {
  const std::string dir = testing::makeTempDir("cli_fsize");
  const auto r = runCommand({"sh", "-c", "ulimit -f 16 && exec \"$0\" gen-data \"$1\" --out \"$2\"",
                             binPath("ringtrain"), testing::sourcePath("configs/default.yaml"), dir + "/data"});
  EXPECT_EQ(r.term_signal, 0) << "killed by signal " << r.term_signal;
  expectOneLineError(r, "cannot write synthetic corpus " + dir + "/data/sequences.txt: writing " + dir +
                            "/data/.sequences.txt.tmp.");
  EXPECT_THAT(r.err, HasSubstr("File too large"));
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/data")) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringtrain
