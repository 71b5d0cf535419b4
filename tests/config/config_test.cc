#include "ringtrain/config/config.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ringtrain/core/error.h"
#include "testing/captured_log.h"
#include "testing/command.h"

namespace ringtrain::config {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

std::string errorOf(const std::string& yaml, const std::vector<Override>& overrides = {}) {
  try {
    loadString(yaml, "job.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, DefaultYamlMatchesBuiltInDefaultsAndNamesEveryKey) {
  const JobConfig from_file = loadFile(testing::sourcePath("configs/default.yaml"));
  EXPECT_EQ(differingKeys(from_file, JobConfig{}), std::vector<std::string>{});
  // Every schema key is documented in the file (loadFile accepts omitted keys, so check the text).
  std::ifstream in(testing::sourcePath("configs/default.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string& key : allKeys()) {
    const std::string leaf = key.substr(key.find('.') + 1);
    EXPECT_THAT(text, HasSubstr("  " + leaf + ":")) << key << " is not documented in configs/default.yaml";
  }
}

TEST(Config, LoadsValuesAndOverridesWinOverTheFile) {
  const JobConfig c = loadString("data:\n  window: 3\n  context: basket\noptim:\n  lr: 0.25\n", "job.yaml",
                                 {parseOverride("data.window=7"), parseOverride("run.device=cuda")});
  EXPECT_EQ(c.data.window, 7);
  EXPECT_EQ(c.data.context, "basket");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.25);
  EXPECT_EQ(c.run.device, "cuda");
}

TEST(Config, CanonicalYamlRoundTripsAndHashIsStable) {
  JobConfig c;
  c.data.corpus = "some \"quoted\" path";
  c.optim.lr = 0.1;
  const JobConfig back = loadString(toYaml(c), "canonical");
  EXPECT_EQ(differingKeys(c, back), std::vector<std::string>{});
  EXPECT_EQ(hash(c), hash(back));
  EXPECT_EQ(hash(c).size(), 16u);
  JobConfig other = c;
  other.ddp.bucket_cap_mb = 10;
  EXPECT_NE(hash(c), hash(other));
  EXPECT_EQ(differingKeys(c, other), std::vector<std::string>{"ddp.bucket_cap_mb"});
  JobConfig negative_zero = c, zero = c;  // one setting written two ways: one job
  negative_zero.optim.weight_decay = -0.0;
  zero.optim.weight_decay = 0.0;
  EXPECT_EQ(hash(negative_zero), hash(zero));
  JobConfig resumed = c;
  resumed.checkpoint.resume = true;
  resumed.run.crash_at_step = 7;
  resumed.ddp.sparse_sync = "shared";  // every mode sums the same rows in the same order
  resumed.ddp.overlap_sparse = false;
  resumed.eval.max_queries = 100;       // evaluation and logging do not change what training computes
  resumed.eval.recent_decay = 0.5;
  resumed.log.level = "debug";
  resumed.run.name = "a label";         // neither do a label, the corpus cache, replica checks, or how bytes
  resumed.data.cache = false;           // between ranks on one host travel
  resumed.ddp.replica_check_every = 5;
  resumed.comm.same_host_copy = false;
  EXPECT_EQ(hash(c), hash(resumed)) << "how a run is invoked must not change the job's identity";
  // The ranks of one job must still agree on every key.
  EXPECT_NE(fullHash(c), fullHash(resumed));
  EXPECT_EQ(fullHash(c), fullHash(back));
}

TEST(Config, IdentityDifferencesNameTheKeysHashCoversWithBothValues) {
  JobConfig a;
  JobConfig b = a;
  b.optim.lr = 0.5;
  b.data.window = 9;
  b.eval.max_queries = 3;  // not part of the identity
  b.ddp.sparse_sync = "shared";
  b.run.output_dir = "moved/elsewhere";  // nor where the run lives, how often it keeps checkpoints, or the loader's threads
  b.checkpoint.every_steps = 7;
  b.checkpoint.keep = 9;
  b.loader.workers = 5;
  const std::vector<IdentityDifference> d = identityDifferences(a, b);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].key, "data.window");  // schema order
  EXPECT_EQ(d[0].first, "5");
  EXPECT_EQ(d[0].second, "9");
  EXPECT_EQ(d[1].key, "optim.lr");
  EXPECT_EQ(d[1].second, "0.5");
  b.optim.lr = a.optim.lr;
  b.data.window = a.data.window;
  EXPECT_TRUE(identityDifferences(a, b).empty());
  EXPECT_EQ(hash(a), hash(b));
}

TEST(Config, StoredConfigurationsFromOtherVersionsLoad) {
  // Another version's canonical YAML: a section and a key this version lacks, a value it refuses for a key
  // outside the job's identity, and this version's keys missing (they keep their defaults).
  const std::string yaml =
      "run:\n  seed: 9\n  retired_knob: 3\nretired_section:\n  x: 1\noptim:\n  lr: 0.25\n"
      "serve:\n  threads: 100000\n";
  std::vector<std::string> ignored;
  const JobConfig c = loadStored(yaml, "ckpt (stored configuration)", &ignored);
  EXPECT_EQ(c.run.seed, 9u);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.25);
  EXPECT_EQ(c.data.window, JobConfig{}.data.window);
  EXPECT_EQ(c.serve.threads, JobConfig{}.serve.threads);
  ASSERT_EQ(ignored.size(), 3u) << ::testing::PrintToString(ignored);
  EXPECT_EQ(ignored[0], "run.retired_knob: 3");
  EXPECT_EQ(ignored[1], "retired_section.x: 1");
  EXPECT_THAT(ignored[2], HasSubstr("serve.threads: 100000 ("));
  // A value this version refuses for a key of the identity is an error, naming where it came from.
  EXPECT_THAT([&] { loadStored("data:\n  window: 0\n", "ckpt (stored configuration)", &ignored); },
              ThrowsMessage<ConfigError>(AllOf(HasSubstr("ckpt (stored configuration)"), HasSubstr("data.window"))));
  // The strict loader still rejects what the tolerant one skips.
  EXPECT_THAT(errorOf(yaml), HasSubstr("unknown key 'run.retired_knob'"));
  // A checkpoint from before ddp.balance needed run.deterministic false: the how-to-run setting is reset
  // without a word (nothing read from a stored configuration depends on it).
  const JobConfig balanced = loadStored("ddp:\n  balance: true\n", "ckpt (stored configuration)", &ignored);
  EXPECT_FALSE(balanced.ddp.balance);
  EXPECT_TRUE(ignored.empty()) << ::testing::PrintToString(ignored);
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  // Unclosed at the end of the file: the last line is named (the parser's mark is on the line after it).
  EXPECT_THAT(errorOf("run:\n  seed: 1\n  name: [unclosed\n"),
              HasSubstr("job.yaml:3: YAML syntax error at the end of the file"));
  EXPECT_THAT(errorOf("run:\n  seed: 1\n  name: [unclosed"), HasSubstr("job.yaml:3: YAML syntax error"));
  EXPECT_THAT(errorOf("run:\n  seed: 1\n  name: [unclosed\ndata:\n  window: 3\n"), HasSubstr("job.yaml:"));
  EXPECT_THAT(errorOf("run: {seed: 1\n\n"), HasSubstr("YAML syntax error"));
}

// A missing closing quote: YAML runs a quoted scalar on over lines (yaml-cpp to the end of the file), so the
// keys after it became part of one value and silently kept their defaults. Quotes that close, escaped
// quotes and '' inside single quotes still load.
TEST(Config, AQuotedValueThatDoesNotCloseOnItsLineIsRefused) {
  EXPECT_THAT(errorOf("run:\n  name: \"abc\n  epochs: 3\ndata:\n  window: 3\n"),
              HasSubstr("job.yaml:2: run.name: the quoted value does not close on its line (a missing closing "
                        "quote?)"));
  EXPECT_THAT(errorOf("run:\n  epochs: 3\n  name: 'abc\n"), HasSubstr("job.yaml:3: run.name: the quoted value"));
  EXPECT_THAT(errorOf("run:\n  name: \"ab\\\"\n  epochs: 3\n"), HasSubstr("job.yaml:2: run.name: the quoted"));
  const JobConfig c = loadString("run:\n  name: \"a\\\"b\"  # a comment\n  output_dir: 'it''s'\n  epochs: 3\n",
                                 "job.yaml", {});
  EXPECT_EQ(c.run.name, "a\"b");
  EXPECT_EQ(c.run.output_dir, "it's");
  EXPECT_EQ(c.run.epochs, 3);
  // A file with a byte order mark (which the parser skips: its positions count from after it), JSON-style.
  const JobConfig bom = loadString("\xEF\xBB\xBF{\"run\": {\"epochs\": 3,\n  \"name\": \"x\"}}\n", "job.yaml", {});
  EXPECT_EQ(bom.run.epochs, 3);
  EXPECT_EQ(bom.run.name, "x");
  EXPECT_THAT(errorOf("\xEF\xBB\xBFrun:\n  name: \"abc\n  epochs: 3\n"), HasSubstr("job.yaml:2: run.name: the quoted"));
}

// The same slip without quotes: a line whose ':' was lost is more indented than its key and continues the
// value above it (YAML folds it in), and a block scalar spans lines by design. A value followed by a
// comment, blanks or a CRLF end is one line.
TEST(Config, APlainValueThatRunsOnOverTheNextLineIsRefused) {
  EXPECT_THAT(errorOf("data:\n  corpus: a.txt\n    min_count 5\n"),
              HasSubstr("job.yaml:2: data.corpus: the value runs on over the next line (a missing ':' there?); "
                        "every setting is one line"));
  EXPECT_THAT(errorOf("run:\n  name: |\n    abc\n    def\n"),
              HasSubstr("job.yaml:2: run.name: a block scalar (| or >) runs over lines"));
  EXPECT_THAT(errorOf("run:\n  name: >-\n    abc\n"), HasSubstr("job.yaml:2: run.name: a block scalar"));
  const JobConfig c = loadString("run:\n  name: a b#c   # a comment\r\n  epochs: 3 \t\ndata:\n  window: 2\n",
                                 "job.yaml", {});
  EXPECT_EQ(c.run.name, "a b#c");
  EXPECT_EQ(c.run.epochs, 3);
  EXPECT_EQ(c.data.window, 2);
}

// A key or section written as null ('~', 'null') or '' was reported as "unknown key 'run.'".
TEST(Config, AKeyWithoutANameIsSaidSo) {
  EXPECT_THAT(errorOf("run:\n  null: 3\n"), HasSubstr("job.yaml:2: run: a key without a name ('', '~' or 'null')"));
  EXPECT_THAT(errorOf("run:\n  ~: 3\n"), HasSubstr("job.yaml:2: run: a key without a name"));
  EXPECT_THAT(errorOf("~:\n  seed: 3\n"), HasSubstr("job.yaml:1: a section without a name"));
}

// The parser's message may quote a byte of a binary file: escaped, never sent raw to the terminal.
TEST(Config, ASyntaxErrorQuotesNoRawBytes) {
  const std::string e = errorOf(std::string("run: \"\\\x82\x01\"\n", 10));
  EXPECT_THAT(e, HasSubstr("YAML syntax error"));
  for (const char c : e) EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << "raw byte " << int(c) << " in: " << e;
}

TEST(Config, UnknownKeySuggestsTheClosest) {
  const std::string e = errorOf("run:\n  seed: 1\ndata:\n  windw: 3\n");
  EXPECT_THAT(e, HasSubstr("job.yaml:4"));
  EXPECT_THAT(e, HasSubstr("unknown key 'data.windw'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'window'"));
}

// An integer may carry a '+' as a number may; a string may not hold a NUL, where the system would cut it.
TEST(Config, APlusSignedIntegerReadsAndANulInAStringIsRefused) {
  EXPECT_EQ(loadString("data:\n  batch_size: +64\n", "job.yaml").data.batch_size, 64);
  EXPECT_EQ(loadString("optim:\n  lr: +0.5\n", "job.yaml").optim.lr, 0.5);
  EXPECT_THAT(errorOf("data:\n  batch_size: +-64\n"), HasSubstr("expected an integer, got '+-64'"));
  EXPECT_THAT(errorOf("data:\n  batch_size: ++64\n"), HasSubstr("expected an integer, got '++64'"));
  const std::string e = errorOf("run:\n  max_steps: 5\n  output_dir: \"out/nul\\0evil\"\n");
  EXPECT_THAT(e, HasSubstr("job.yaml:3"));
  EXPECT_THAT(e, HasSubstr("run.output_dir: holds a NUL character (\\0), where every path and name would end"));
  EXPECT_EQ(loadString("run:\n  output_dir: \"out/tab\\there\"\n", "job.yaml").run.output_dir, "out/tab\there");
}

// A basket has no order: "the newest items" of its query would be only where the line lists them.
TEST(Config, RecentItemsNeedSessions) {
  EXPECT_THAT(errorOf("data:\n  context: basket\neval:\n  recent_items: 2\n"),
              HasSubstr("eval.recent_items: 2 needs data.context window (basket items have no order)"));
  EXPECT_THAT(errorOf("data:\n  context: basket\neval:\n  recent_decay: 0.5\n"),
              HasSubstr("eval.recent_decay: 0.5 needs data.context window"));
  EXPECT_EQ(loadString("eval:\n  recent_items: 2\n  recent_decay: 0.5\n", "job.yaml").eval.recent_items, 2);
}

// A name written as a list or mapping is said to be one (it was "a key without a name").
TEST(Config, ANameThatIsAListOrMappingIsSaidToBeOne) {
  EXPECT_THAT(errorOf("run:\n  [a]: 2\n"), HasSubstr("job.yaml:2: run: a key named by a list; a name is a word"));
  EXPECT_THAT(errorOf("{a: 1}: 2\n"), HasSubstr("job.yaml:1: a section named by a mapping"));
}

TEST(Config, KeyInTheWrongSectionNamesWhereItBelongs) {
  EXPECT_THAT(errorOf("run:\n  batch_size: 3\n"), HasSubstr("did you mean 'data.batch_size'"));
}

TEST(Config, UnknownSectionSuggestsTheClosest) {
  const std::string e = errorOf("optimizer:\n  lr: 1\n");
  EXPECT_THAT(e, HasSubstr("job.yaml:1"));
  EXPECT_THAT(e, HasSubstr("unknown section 'optimizer'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'optim'"));
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  const std::string e = errorOf("data:\n  batch_size: lots\n");
  EXPECT_THAT(e, HasSubstr("job.yaml:2"));
  EXPECT_THAT(e, HasSubstr("data.batch_size"));
  EXPECT_THAT(e, HasSubstr("expected an integer, got 'lots'"));
  EXPECT_THAT(errorOf("run:\n  deterministic: maybe\n"), HasSubstr("expected true or false (or yes/no, on/off, 1/0)"));
  // YAML 1.1's spellings, in any of its three cases; not a mixed case.
  // (Each from the other value's default: log.plot is true unless told, ddp.static_graph false.)
  for (const char* word : {"yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE", "1"}) {
    EXPECT_TRUE(loadString("", "job.yaml", {parseOverride(std::string("ddp.static_graph=") + word)}).ddp.static_graph)
        << word;
  }
  for (const char* word : {"no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE", "0"}) {
    EXPECT_FALSE(loadString("", "job.yaml", {parseOverride(std::string("log.plot=") + word)}).log.plot) << word;
  }
  EXPECT_THAT(errorOf("", {parseOverride("log.plot=oN")}), HasSubstr("got 'oN'"));
  EXPECT_THAT(errorOf("optim:\n  lr: [1, 2]\n"), HasSubstr("expected a single value"));
  // Overflow is out of range; underflow reads as the nearest double (strtod flags both with ERANGE), unless
  // that is 0: the number written was not 0.
  EXPECT_THAT(errorOf("optim:\n  eps: 1e999\n"), HasSubstr("optim.eps: number '1e999' is out of range"));
  EXPECT_EQ(loadString("optim:\n  eps: 1e-320\n", "job.yaml").optim.eps, 1e-320);
  EXPECT_THAT(errorOf("optim:\n  eps: 1e-400\n"),
              HasSubstr("optim.eps: number '1e-400' is below the smallest double (about 4.9e-324) and would read as 0"));
  EXPECT_THAT(errorOf("optim:\n  lr: -1e-400\n"), HasSubstr("optim.lr: number '-1e-400' is below the smallest double"));
  EXPECT_EQ(loadString("optim:\n  weight_decay: 0e-999\n", "job.yaml").optim.weight_decay, 0.0);
  // Decimal only, as integers are: strtod alone read 0x1p-3.
  EXPECT_THAT(errorOf("optim:\n  lr: 0x1p-3\n"), HasSubstr("optim.lr: expected a decimal number, got '0x1p-3'"));
}

// Values in the type's range that no run can use: refused where they are written, not as an overflow or a
// run that learns nothing.
TEST(Config, ValuesNoRunCanUseAreRejected) {
  EXPECT_THAT(errorOf("optim:\n  lr: 0\n"), HasSubstr("job.yaml:2: optim.lr: must be > 0, got 0"));
  EXPECT_THAT(errorOf("comm:\n  timeout_s: 1e17\n"),
              HasSubstr("job.yaml:2: comm.timeout_s: must be between 0.001 and 31536000, got 1e+17"));
  EXPECT_THAT(errorOf("run:\n  output_dir: ''\n"), HasSubstr("job.yaml:2: run.output_dir: must not be empty"));
}

TEST(Config, OutOfRangeValuesAreRejected) {
  EXPECT_THAT(errorOf("data:\n  batch_size: -5\n"), HasSubstr("data.batch_size: must be between 1"));
  EXPECT_THAT(errorOf("run:\n  threads: 0\n"), HasSubstr("run.threads"));
  EXPECT_THAT(errorOf("comm:\n  master_port: 70000\n"), HasSubstr("comm.master_port"));
  EXPECT_THAT(errorOf("optim:\n  name: lbfgs\n"), HasSubstr("must be one of sgd, adagrad, adam"));
  EXPECT_THAT(errorOf("", {parseOverride("data.negatives=-1")}), HasSubstr("--set: data.negatives"));
  // Limits that are themselves invalid: Adam divides by 1 - beta^t, and by sqrt(v) + eps.
  EXPECT_THAT(errorOf("optim:\n  beta1: 1\n"), HasSubstr("optim.beta1: must be >= 0 and below 1, got 1"));
  EXPECT_THAT(errorOf("optim:\n  beta2: 1.5\n"), HasSubstr("optim.beta2: must be >= 0 and below 1, got 1.5"));
  EXPECT_THAT(errorOf("optim:\n  eps: 0\n"), HasSubstr("optim.eps: must be > 0, got 0"));
  EXPECT_EQ(loadString("optim:\n  beta1: 0\n  beta2: 0.999999\n  eps: 1e-30\n", "job.yaml").optim.beta2, 0.999999);
}

// yaml-cpp keeps a repeated key and the later one would win; a second document would be dropped.
TEST(Config, RepeatedKeysSectionsAndSecondDocumentsAreRefused) {
  EXPECT_THAT(errorOf("run:\n  name: a\n  name: b\n"),
              HasSubstr("job.yaml:3: key 'run.name' is given twice (first at line 2)"));
  EXPECT_THAT(errorOf("run:\n  name: a\ndata:\n  window: 3\nrun:\n  seed: 1\n"),
              HasSubstr("job.yaml:5: section 'run' is given twice (first at line 1)"));
  EXPECT_THAT(errorOf("run:\n  name: a\n---\nrun:\n  name: b\n"), HasSubstr("job.yaml:4: a second YAML document"));
  EXPECT_EQ(loadString("run:\n  name: a\n---\n", "job.yaml").run.name, "a") << "a trailing '---' is nothing more";
  EXPECT_EQ(loadString("run:\n  name: a\ndata:\n  window: 3\n", "job.yaml").run.name, "a");
}

TEST(Config, WorkBalanceIsForCpuRanksOnly) {
  EXPECT_TRUE(loadString("run:\n  deterministic: false\nddp:\n  balance: true\n", "job.yaml").ddp.balance);
  EXPECT_FALSE(loadString("run:\n  device: cuda\n", "job.yaml").ddp.balance);
  EXPECT_THAT(errorOf("run:\n  device: cuda\n  deterministic: false\nddp:\n  balance: true\n"),
              HasSubstr("ddp.balance: true needs run.device cpu"));
}

// Balanced shares follow measured speeds, so two runs sum in another order: refused while the job asks to be
// bit for bit (the default), with the key that allows it. Neither key is part of the job's identity.
TEST(Config, WorkBalanceNeedsANonDeterministicRun) {
  EXPECT_THAT(errorOf("ddp:\n  balance: true\n"), HasSubstr("ddp.balance: true needs run.deterministic false"));
  EXPECT_THAT(errorOf("", {parseOverride("ddp.balance=true")}), HasSubstr("needs run.deterministic false"));
  JobConfig strict;
  JobConfig relaxed = loadString("run:\n  deterministic: false\nddp:\n  balance: true\n", "job.yaml");
  EXPECT_EQ(hash(strict), hash(relaxed)) << "a checkpoint resumes with balance turned on or off";
}

// Stealing decides by the clock who trains what: refused where the job promises bit for bit, on GPUs, beside
// ddp.balance, with micro-batches and with dense tables, each naming the key; outside the job's identity like
// balance.
TEST(Config, WorkStealingNamesWhatItNeeds) {
  const std::string relaxed = "run:\n  deterministic: false\n";
  EXPECT_TRUE(loadString(relaxed + "ddp:\n  steal: true\n", "job.yaml").ddp.steal);
  EXPECT_THAT(errorOf("ddp:\n  steal: true\n"), HasSubstr("ddp.steal: true needs run.deterministic false"));
  EXPECT_THAT(errorOf("run:\n  device: cuda\n  deterministic: false\nddp:\n  steal: true\n"),
              HasSubstr("ddp.steal: true needs run.device cpu"));
  EXPECT_THAT(errorOf(relaxed + "ddp:\n  steal: true\n  balance: true\n"), HasSubstr("choose one"));
  EXPECT_THAT(errorOf(relaxed + "ddp:\n  steal: true\n  accumulation_steps: 2\n"),
              HasSubstr("ddp.steal: true needs ddp.accumulation_steps 1"));
  EXPECT_THAT(errorOf(relaxed + "ddp:\n  steal: true\nmodel:\n  sparse: false\n"),
              HasSubstr("ddp.steal: true needs model.sparse true"));
  EXPECT_THAT(errorOf(relaxed + "ddp:\n  steal_min_pairs: 0\n"), HasSubstr("ddp.steal_min_pairs"));
  EXPECT_THAT(errorOf(relaxed + "ddp:\n  steal_min_pairs: 5000000000000000000\n"), HasSubstr("ddp.steal_min_pairs"))
      << "a piece size whose arithmetic would overflow";
  EXPECT_THAT(errorOf("", {parseOverride("ddp.steal_min_pair=8")}), HasSubstr("did you mean 'steal_min_pairs'"))
      << "the nearest of the keys it begins, not the first key that begins it ('steal')";
  EXPECT_THAT(errorOf("", {parseOverride("optim.war=8")}), HasSubstr("did you mean 'warmup_steps'"));
  EXPECT_THAT(errorOf("", {parseOverride("log.eve=8")}), HasSubstr("did you mean 'every_steps'"));
  EXPECT_THAT(errorOf("", {parseOverride("ddp.sta=true")}), HasSubstr("did you mean 'static_graph'"));
  EXPECT_EQ(hash(JobConfig{}), hash(loadString(relaxed + "ddp:\n  steal: true\n  steal_min_pairs: 64\n", "job.yaml")))
      << "a checkpoint resumes with stealing turned on or off";
}

TEST(Config, ForwardDirectionIsForWindowContextOnly) {
  EXPECT_EQ(loadString("data:\n  direction: forward\n", "job.yaml").data.direction, "forward");
  EXPECT_THAT(errorOf("data:\n  direction: backward\n"), HasSubstr("must be one of both, forward"));
  EXPECT_THAT(errorOf("data:\n  context: basket\n  direction: forward\n"),
              HasSubstr("data.direction: 'forward' needs data.context window"));
  EXPECT_THAT(errorOf("data:\n  direction: forward\n", {parseOverride("data.context=basket")}),
              HasSubstr("data.direction"));
}

TEST(Config, NothingToTrainIsRefusedAtTheLineOfRunEpochs) {
  EXPECT_THAT(errorOf("run:\n  name: a\n  epochs: 0\n"),
              HasSubstr("job.yaml:3: run.epochs: 0 with run.max_steps 0 trains nothing: set one of them"));
  EXPECT_EQ(loadString("run:\n  epochs: 0\n  max_steps: 5\n", "job.yaml").run.max_steps, 5);
}

// Checked when the config loads (`ringtrain config`, a run's start), at the line of the key, not only when
// the corpus is generated, which named no file or line.
TEST(Config, MoreSyntheticCategoriesThanItemsAreRefusedAtTheirLine) {
  EXPECT_THAT(errorOf("synthetic:\n  items: 10\n  categories: 20\n"),
              HasSubstr("job.yaml:3: synthetic.categories: 20 categories for synthetic.items 10 (gen-data --items): "
                        "at most one category per item"));
  EXPECT_EQ(loadString("synthetic:\n  items: 20\n  categories: 20\n", "job.yaml").synthetic.categories, 20);
  // A job with its own corpus does not read the section.
  const JobConfig own_corpus =
      loadString("data:\n  corpus: c.txt\nsynthetic:\n  items: 10\n  categories: 20\n", "job.yaml");
  EXPECT_EQ(own_corpus.synthetic.items, 10);
}

TEST(Config, BadSetSyntaxIsRejected) {
  for (const char* bad : {"datawindow=3", "data.window", ".window=3", "data.=3", "window=data.x"}) {
    EXPECT_THROW(parseOverride(bad), ConfigError) << bad;
  }
  try {
    parseOverride("data.window");
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("expected section.key=value"));
  }
  EXPECT_THAT(errorOf("", {parseOverride("data.windo=3")}), HasSubstr("did you mean 'window'"));
}

// A later override of a key wins over an earlier one: a script's defaults, then what its caller passed on.
TEST(Config, ALaterOverrideOfAKeyWins) {
  EXPECT_EQ(loadString("data:\n  window: 3\n", "job.yaml", {parseOverride("data.window=5"), parseOverride("data.window=7")})
                .data.window,
            7);
  // A bad earlier value is still refused: every override is checked as it is applied.
  EXPECT_THAT(errorOf("", {parseOverride("data.window=-1"), parseOverride("data.window=7")}), HasSubstr("data.window"));
}

TEST(Config, MissingFileIsAConfigError) {
  try {
    loadFile("/nonexistent/job.yaml");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/job.yaml: cannot open config file"));
    EXPECT_EQ(e.exitCode(), kExitBadInput);
  }
  // A directory opens and reads as nothing: it must not become the default job.
  EXPECT_THAT([] { loadFile("/tmp"); }, ThrowsMessage<ConfigError>(HasSubstr("/tmp: is a directory, not a config file")));
}

// An empty job file (/dev/null, a truncated file, comments only) loads as the defaults, with a warning: a
// train run would otherwise generate the default synthetic job without a word. One that sets anything
// says nothing.
TEST(Config, AJobFileThatSetsNothingIsWarnedAbout) {
  const std::string dir = testing::makeTempDir("config_empty");
  for (const std::string text : {"", "# only a comment\n\n", "---\n"}) {
    {
      std::ofstream(dir + "/job.yaml") << text;
    }
    testing::CapturedLog log;
    const JobConfig c = loadFile(dir + "/job.yaml");
    EXPECT_EQ(c.run.epochs, JobConfig{}.run.epochs);
    EXPECT_THAT(log.text(), HasSubstr(dir + "/job.yaml: the job file sets nothing: every setting is its default"))
        << "for '" << text << "'";
  }
  {
    std::ofstream(dir + "/job.yaml") << "run:\n  epochs: 2\n";
  }
  testing::CapturedLog log;
  EXPECT_EQ(loadFile(dir + "/job.yaml").run.epochs, 2);
  EXPECT_THAT(log.text(), Not(HasSubstr("sets nothing")));
  std::filesystem::remove_all(dir);
}

TEST(Config, EmptyStringValuesAndNullSections) {
  const JobConfig c = loadString("data:\n  corpus:\nlog:\n", "job.yaml");
  EXPECT_EQ(c.data.corpus, "");
}

}  // namespace
}  // namespace ringtrain::config
