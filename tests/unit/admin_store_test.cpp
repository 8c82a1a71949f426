#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "admin/store.hpp"

namespace aerie::admin {
namespace {

namespace fs = std::filesystem;
using Transaction = Store::Transaction;

// Runs SQL on the store's file behind the Store's back; returns the first column of the
// last row (or "" when there is none).
std::string raw_sql(const fs::path& path, const std::string& sql) {
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK)
        throw std::runtime_error("cannot open " + path.string());
    std::string last;
    auto keep = [](void* out, int columns, char** values, char**) {
        if (columns > 0) *static_cast<std::string*>(out) = values[0] ? values[0] : "";
        return 0;
    };
    char* error = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), keep, &last, &error);
    std::string message = error ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    if (rc != SQLITE_OK) throw std::runtime_error(sql + ": " + message);
    return last;
}

StoredQube make_qube(int qid, const std::string& name) {
    StoredQube qube;
    qube.uuid = "uuid-" + std::to_string(qid);
    qube.qid = qid;
    qube.name = name;
    qube.klass = "AppVM";
    qube.properties = {{"label", "red"}, {"memory", "400"}, {"netvm", ""}};
    qube.features = {{"gui", "1"}, {"service.cups", "0"}};
    qube.tags = {"created-by-dom0", "audiovm"};
    qube.notes = "notes of " + name;
    return qube;
}

void expect_same(const StoredQube& got, const StoredQube& want) {
    EXPECT_EQ(got.uuid, want.uuid);
    EXPECT_EQ(got.qid, want.qid);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.klass, want.klass);
    EXPECT_EQ(got.properties, want.properties);
    EXPECT_EQ(got.features, want.features);
    EXPECT_EQ(got.tags, want.tags);
    EXPECT_EQ(got.notes, want.notes);
}

std::string error_of(const std::function<void()>& action) {
    try {
        action();
    } catch (const StoreError& e) {
        return e.what();
    }
    return "(no StoreError)";
}

class AdminStore : public ::testing::Test {
protected:
    void SetUp() override {
        char dir_template[] = "/tmp/aerie-store-test-XXXXXX";
        ASSERT_NE(mkdtemp(dir_template), nullptr);
        dir_ = dir_template;
        path_ = dir_ / "store.db";
    }
    void TearDown() override { fs::remove_all(dir_); }

    void add(Store& store, const StoredQube& qube) {
        Transaction t(store);
        t.add_qube(qube);
        t.commit();
    }

    fs::path dir_;
    fs::path path_;
};

TEST_F(AdminStore, NewStoreIsEmptyAtTheCurrentSchemaVersion) {
    Store store(path_);
    EXPECT_TRUE(fs::exists(path_));
    EXPECT_EQ(store.schema_version(), Store::kSchemaVersion);
    EXPECT_EQ(Store::kSchemaVersion, 1);
    EXPECT_EQ(raw_sql(path_, "SELECT value FROM meta WHERE key = 'schema_version'"), "1");
    StoredState state = store.load();
    EXPECT_TRUE(state.qubes.empty());
    EXPECT_TRUE(state.global_properties.empty());
    EXPECT_TRUE(state.custom_labels.empty());
    EXPECT_EQ(store.check_integrity(), "");
    EXPECT_EQ(raw_sql(path_, "PRAGMA journal_mode"), "wal");
}

TEST_F(AdminStore, AddQubeRoundTripsEverythingOrderedByQid) {
    Store store(path_);
    StoredQube work = make_qube(3, "work");
    StoredQube vault = make_qube(1, "vault");
    vault.klass = "TemplateVM";
    vault.properties.clear();
    vault.features.clear();
    vault.tags.clear();
    vault.notes = "";
    {
        Transaction t(store);
        t.add_qube(work);
        t.add_qube(vault);
        t.commit();
    }
    StoredState state = store.load();
    ASSERT_EQ(state.qubes.size(), 2u);
    expect_same(state.qubes[0], vault);
    expect_same(state.qubes[1], work);
}

TEST_F(AdminStore, EveryChangeRoundTrips) {
    Store store(path_);
    StoredQube qube = make_qube(1, "work");
    add(store, qube);
    {
        Transaction t(store);
        t.set_property(qube.uuid, "memory", "800");  // replaces
        t.set_property(qube.uuid, "vcpus", "2");     // adds
        t.reset_property(qube.uuid, "label");
        t.reset_property(qube.uuid, "never-set");  // a no-op
        t.set_feature(qube.uuid, "gui", "0");
        t.set_feature(qube.uuid, "os", "Linux");
        t.remove_feature(qube.uuid, "service.cups");
        t.add_tag(qube.uuid, "new-tag");
        t.add_tag(qube.uuid, "new-tag");  // twice is once
        t.remove_tag(qube.uuid, "audiovm");
        t.set_notes(qube.uuid, "multi\nline ünïcode notes");
        t.set_global("default_netvm", "sys-firewall");
        t.set_global("clockvm", "sys-net");
        t.set_global("clockvm", "sys-clock");
        t.set_global("updatevm", "sys-net");
        t.reset_global("updatevm");
        t.add_label(Label{10, "ten", "0x101010"});
        t.add_label(Label{9, "nine", "0x090909"});
        t.add_label(Label{11, "eleven", "0x111111"});
        t.remove_label(11);
        t.commit();
    }
    StoredState state = store.load();
    ASSERT_EQ(state.qubes.size(), 1u);
    const StoredQube& got = state.qubes[0];
    EXPECT_EQ(got.properties,
              (std::map<std::string, std::string>{{"memory", "800"}, {"netvm", ""}, {"vcpus", "2"}}));
    EXPECT_EQ(got.features, (std::map<std::string, std::string>{{"gui", "0"}, {"os", "Linux"}}));
    EXPECT_EQ(got.tags, (std::set<std::string>{"created-by-dom0", "new-tag"}));
    EXPECT_EQ(got.notes, "multi\nline ünïcode notes");
    EXPECT_EQ(state.global_properties, (std::map<std::string, std::string>{
                                           {"clockvm", "sys-clock"}, {"default_netvm", "sys-firewall"}}));
    ASSERT_EQ(state.custom_labels.size(), 2u);
    EXPECT_EQ(state.custom_labels[0].index, 9);
    EXPECT_EQ(state.custom_labels[0].name, "nine");
    EXPECT_EQ(state.custom_labels[0].color, "0x090909");
    EXPECT_EQ(state.custom_labels[1].index, 10);
    EXPECT_EQ(state.custom_labels[1].name, "ten");
    EXPECT_EQ(store.check_integrity(), "");
}

TEST_F(AdminStore, ValuesAreStoredByteForByte) {
    Store store(path_);
    StoredQube qube = make_qube(1, "work");
    std::string binary("a\0b\xff", 4);
    qube.properties = {{"empty", ""}, {"binary", binary}};
    add(store, qube);
    EXPECT_EQ(store.load().qubes[0].properties, qube.properties);
}

TEST_F(AdminStore, UncommittedTransactionRollsBack) {
    Store store(path_);
    add(store, make_qube(1, "work"));
    {
        Transaction t(store);
        t.add_qube(make_qube(2, "vault"));
        t.rename_qube("uuid-1", "renamed");
        t.set_global("default_netvm", "sys-net");
    }
    try {
        Transaction t(store);
        t.set_property("uuid-1", "memory", "1");
        throw std::runtime_error("caller failure");
    } catch (const std::runtime_error&) {
    }
    StoredState state = store.load();
    ASSERT_EQ(state.qubes.size(), 1u);
    expect_same(state.qubes[0], make_qube(1, "work"));
    EXPECT_TRUE(state.global_properties.empty());
    // The store is usable afterwards.
    add(store, make_qube(2, "vault"));
    EXPECT_EQ(store.load().qubes.size(), 2u);
}

TEST_F(AdminStore, FailedChangeSpoilsTheTransaction) {
    Store store(path_);
    Transaction t(store);
    t.add_qube(make_qube(1, "work"));
    std::string error = error_of([&] { t.set_property("no-such-uuid", "memory", "1"); });
    EXPECT_NE(error.find(path_.string()), std::string::npos) << error;
    EXPECT_NE(error.find("cannot set property 'memory' of qube no-such-uuid"), std::string::npos) << error;
    EXPECT_NE(error.find("FOREIGN KEY constraint failed"), std::string::npos) << error;
    EXPECT_NE(error_of([&] { t.set_global("a", "b"); }).find("earlier change"), std::string::npos);
    EXPECT_NE(error_of([&] { t.commit(); }).find("earlier change"), std::string::npos);
}

TEST_F(AdminStore, FailedTransactionLeavesNothing) {
    Store store(path_);
    {
        Transaction t(store);
        t.add_qube(make_qube(1, "work"));
        EXPECT_THROW(t.rename_qube("no-such-uuid", "x"), StoreError);
        EXPECT_THROW(t.commit(), StoreError);
    }
    EXPECT_TRUE(store.load().qubes.empty());
}

TEST_F(AdminStore, OneTransactionAtATimeAndNoChangeAfterCommit) {
    Store store(path_);
    Transaction t(store);
    EXPECT_NE(error_of([&] { Transaction nested(store); }).find("already open"), std::string::npos);
    t.set_global("a", "b");
    t.commit();
    EXPECT_THROW(t.set_global("c", "d"), StoreError);
    EXPECT_THROW(t.commit(), StoreError);
    Transaction next(store);  // the committed one no longer blocks
    next.commit();
    EXPECT_EQ(store.load().global_properties.size(), 1u);
}

TEST_F(AdminStore, LoadInsideATransactionSeesItsChanges) {
    Store store(path_);
    Transaction t(store);
    t.add_qube(make_qube(1, "work"));
    EXPECT_EQ(store.load().qubes.size(), 1u);
}

TEST_F(AdminStore, DuplicatesAreRefused) {
    Store store(path_);
    add(store, make_qube(1, "work"));
    StoredQube same_name = make_qube(2, "work");
    StoredQube same_qid = make_qube(1, "other");
    same_qid.uuid = "uuid-other";
    StoredQube same_uuid = make_qube(3, "third");
    same_uuid.uuid = "uuid-1";
    for (const StoredQube& qube : {same_name, same_qid, same_uuid}) {
        Transaction t(store);
        std::string error = error_of([&] { t.add_qube(qube); });
        EXPECT_NE(error.find("cannot add qube '" + qube.name + "'"), std::string::npos) << error;
        EXPECT_NE(error.find("UNIQUE constraint failed"), std::string::npos) << error;
    }
    Transaction t(store);
    EXPECT_THROW(t.add_label(Label{5, "default-index", "0x000000"}),
                 StoreError);  // indexes 1..8 are defaults
    EXPECT_EQ(store.load().qubes.size(), 1u);
}

TEST_F(AdminStore, RenameKeepsTheQubesRecord) {
    Store store(path_);
    add(store, make_qube(1, "work"));
    add(store, make_qube(2, "vault"));
    {
        Transaction t(store);
        t.rename_qube("uuid-1", "personal");
        t.commit();
    }
    StoredQube want = make_qube(1, "work");
    want.name = "personal";
    expect_same(store.load().qubes[0], want);

    {
        Transaction t(store);
        std::string error = error_of([&] { t.rename_qube("uuid-1", "vault"); });
        EXPECT_NE(error.find("cannot rename qube uuid-1 to 'vault'"), std::string::npos) << error;
        EXPECT_NE(error.find("UNIQUE constraint failed: qubes.name"), std::string::npos) << error;
    }
    EXPECT_EQ(store.load().qubes[0].name, "personal");
}

TEST_F(AdminStore, RenameOfAnUnknownQubeFails) {
    Store store(path_);
    Transaction t(store);
    EXPECT_NE(error_of([&] { t.rename_qube("nope", "x"); }).find("no qube with uuid nope"),
              std::string::npos);
}

TEST_F(AdminStore, RemoveQubeRemovesEverythingOfIt) {
    Store store(path_);
    add(store, make_qube(1, "work"));
    add(store, make_qube(2, "vault"));
    {
        Transaction t(store);
        t.remove_qube("uuid-1");
        t.commit();
    }
    StoredState state = store.load();
    ASSERT_EQ(state.qubes.size(), 1u);
    expect_same(state.qubes[0], make_qube(2, "vault"));
    for (const char* table : {"qube_properties", "qube_features", "qube_tags"}) {
        std::string sql = std::string("SELECT count(*) FROM ") + table + " WHERE uuid = 'uuid-1'";
        EXPECT_EQ(raw_sql(path_, sql), "0") << table;
        sql = std::string("SELECT count(*) FROM ") + table + " WHERE uuid = 'uuid-2'";
        EXPECT_NE(raw_sql(path_, sql), "0") << table;
    }
    // The name and qid are free again.
    add(store, make_qube(1, "work"));
    Transaction t(store);
    EXPECT_NE(error_of([&] { t.remove_qube("nope"); }).find("no qube with uuid nope"), std::string::npos);
}

TEST_F(AdminStore, EverythingSurvivesReopening) {
    {
        Store store(path_);
        add(store, make_qube(2, "work"));
        add(store, make_qube(1, "vault"));
        Transaction t(store);
        t.set_global("default_netvm", "sys-firewall");
        t.add_label(Label{9, "nine", "0x090909"});
        t.commit();
    }
    Store store(path_);
    StoredState state = store.load();
    ASSERT_EQ(state.qubes.size(), 2u);
    expect_same(state.qubes[0], make_qube(1, "vault"));
    expect_same(state.qubes[1], make_qube(2, "work"));
    EXPECT_EQ(state.global_properties.at("default_netvm"), "sys-firewall");
    ASSERT_EQ(state.custom_labels.size(), 1u);
    EXPECT_EQ(state.custom_labels[0].name, "nine");
    EXPECT_EQ(store.schema_version(), 1);
}

TEST_F(AdminStore, NewerSchemaVersionIsRefused) {
    { Store store(path_); }
    raw_sql(path_, "UPDATE meta SET value = 7 WHERE key = 'schema_version'");
    std::string error = error_of([&] { Store store(path_); });
    EXPECT_NE(error.find(path_.string()), std::string::npos) << error;
    EXPECT_NE(error.find("schema version 7 is newer than this Aerie supports (1)"), std::string::npos)
        << error;
    // Refusing changed nothing.
    EXPECT_EQ(raw_sql(path_, "SELECT value FROM meta WHERE key = 'schema_version'"), "7");
}

TEST_F(AdminStore, AnEmptyFileBecomesAStore) {
    std::ofstream(path_).close();
    ASSERT_EQ(fs::file_size(path_), 0u);
    Store store(path_);
    EXPECT_EQ(store.schema_version(), 1);
    add(store, make_qube(1, "work"));
    EXPECT_EQ(store.check_integrity(), "");
}

TEST_F(AdminStore, AFileThatIsNotADatabaseIsRefused) {
    for (std::string content : {std::string("qubes.xml would be here\n"), std::string(4096, 'x')}) {
        std::ofstream(path_) << content;
        std::string error = error_of([&] { Store store(path_); });
        EXPECT_NE(error.find("Aerie store " + path_.string()), std::string::npos) << error;
        EXPECT_NE(error.find("not a database"), std::string::npos) << error;
        // Left as it was.
        std::ifstream in(path_);
        EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), content);
    }
}

TEST_F(AdminStore, SomeoneElsesDatabaseIsRefused) {
    raw_sql(path_, "CREATE TABLE photos (id INTEGER PRIMARY KEY)");
    std::string error = error_of([&] { Store store(path_); });
    EXPECT_NE(error.find(path_.string()), std::string::npos) << error;
    EXPECT_NE(error.find("not an Aerie store"), std::string::npos) << error;
}

TEST_F(AdminStore, AMissingDirectoryIsReported) {
    fs::path missing = dir_ / "no" / "store.db";
    std::string error = error_of([&] { Store store(missing); });
    EXPECT_NE(error.find(missing.string()), std::string::npos) << error;
}

TEST_F(AdminStore, IntegrityCheckReportsOrphansAndPasses) {
    Store store(path_);
    add(store, make_qube(1, "work"));
    EXPECT_EQ(store.check_integrity(), "");
    // Foreign keys are off by default in a plain connection.
    raw_sql(path_, "INSERT INTO qube_properties VALUES ('ghost', 'memory', '1')");
    std::string problems = store.check_integrity();
    EXPECT_NE(problems.find("qube_properties"), std::string::npos) << problems;
    EXPECT_NE(problems.find("qubes"), std::string::npos) << problems;
    // Orphans are not loaded.
    EXPECT_EQ(store.load().qubes.size(), 1u);
}

TEST_F(AdminStore, IntegrityCheckReportsADamagedFile) {
    {
        Store store(path_);
        Transaction t(store);
        for (int qid = 1; qid <= 200; ++qid) t.add_qube(make_qube(qid, "qube-" + std::to_string(qid)));
        t.commit();
    }  // closing checkpoints everything into the main file
    auto size = fs::file_size(path_);
    ASSERT_GT(size, 16384u);
    {
        std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(static_cast<std::streamoff>(size / 2));
        file << std::string(8192, '\x5a');
    }
    Store store(path_);
    EXPECT_NE(store.check_integrity(), "");
}

TEST_F(AdminStore, LoadOfAThousandQubesIsQuick) {
    Store store(path_);
    {
        Transaction t(store);
        for (int qid = 1; qid <= 1000; ++qid) {
            StoredQube qube = make_qube(qid, "qube-" + std::to_string(qid));
            for (int i = 0; i < 7; ++i) qube.properties["property-" + std::to_string(i)] = "value";
            t.add_qube(qube);
        }
        t.commit();
    }
    auto start = std::chrono::steady_clock::now();
    StoredState state = store.load();
    auto first_load_time = std::chrono::steady_clock::now() - start;  // includes growing the heap
    ASSERT_EQ(state.qubes.size(), 1000u);
    EXPECT_EQ(state.qubes[999].properties.size(), 10u);
    EXPECT_EQ(state.qubes[999].name, "qube-1000");
    state = {};
    start = std::chrono::steady_clock::now();
    state = store.load();
    auto load_time = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(state.qubes.size(), 1000u);

    start = std::chrono::steady_clock::now();
    constexpr int kCommits = 10;
    for (int i = 0; i < kCommits; ++i) {
        Transaction t(store);
        t.set_property("uuid-500", "memory", std::to_string(i));
        t.commit();
    }
    auto commit_time = (std::chrono::steady_clock::now() - start) / kCommits;
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    std::printf("load of 1000 qubes: %.2f ms (first %.2f ms); one-property commit: %.2f ms\n", ms(load_time),
                ms(first_load_time), ms(commit_time));
    // Loose bounds: the numbers above are the measurement, these only catch gross regressions.
    EXPECT_LT(ms(first_load_time), 500.0);
    EXPECT_LT(ms(commit_time), 500.0);
}

// Each transaction adds qube N (with properties, features, a tag) and sets the global
// "count" to N: both or neither must be there.
[[noreturn]] void commit_until_killed(const fs::path& path, int ack_fd) {
    try {
        Store store(path);
        StoredState state = store.load();
        auto count = state.global_properties.find("count");
        int done = count == state.global_properties.end() ? 0 : std::stoi(count->second);
        for (int n = done + 1; n < done + 100000; ++n) {
            Transaction t(store);
            t.add_qube(make_qube(n, "qube-" + std::to_string(n)));
            t.set_global("count", std::to_string(n));
            t.commit();
            if (write(ack_fd, &n, sizeof n) != sizeof n) _exit(4);
        }
    } catch (...) {
        _exit(3);
    }
    _exit(0);
}

// What the killed child acknowledged, read after its death.
std::vector<int> read_acks(int fd) {
    std::vector<int> acks;
    int n = 0;
    while (read(fd, &n, sizeof n) == sizeof n) acks.push_back(n);
    return acks;
}

TEST_F(AdminStore, KillNineLosesNoAcknowledgedCommitAndLeavesNoHalf) {
    std::random_device device;
    unsigned seed = device();
    std::mt19937 random(seed);
    std::uniform_int_distribution<int> delay_us(0, 40000);
    SCOPED_TRACE("seed " + std::to_string(seed));

    int committed = 0;  // what the store held after the previous kill
    int acknowledged_total = 0;
    for (int round = 0; round < 20; ++round) {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            commit_until_killed(path_, fds[1]);
        }
        close(fds[1]);
        // Every other round waits for a first commit, so that kills land among commits even
        // when opening is slow; the others may also hit the opening (and the creation).
        std::vector<int> acks;
        int first = 0;
        if (round % 2 == 1 && read(fds[0], &first, sizeof first) == sizeof first) acks.push_back(first);
        usleep(static_cast<useconds_t>(delay_us(random)));
        kill(pid, SIGKILL);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "the child failed on its own, status " << status;
        for (int n : read_acks(fds[0])) acks.push_back(n);
        close(fds[0]);
        acknowledged_total += static_cast<int>(acks.size());
        int last_ack = acks.empty() ? committed : acks.back();

        Store store(path_);
        ASSERT_EQ(store.check_integrity(), "") << "round " << round;
        StoredState state = store.load();
        auto count = state.global_properties.find("count");
        int now = count == state.global_properties.end() ? 0 : std::stoi(count->second);
        // Every acknowledged commit is there; at most the one in flight beyond it.
        ASSERT_GE(now, last_ack) << "round " << round;
        ASSERT_LE(now, last_ack + 1) << "round " << round;
        ASSERT_EQ(static_cast<int>(state.qubes.size()), now) << "round " << round;
        for (int n = 1; n <= now; ++n) {
            const StoredQube& qube = state.qubes[n - 1];
            ASSERT_EQ(qube.qid, n);
            ASSERT_EQ(qube.properties.size(), 3u);
            ASSERT_EQ(qube.features.size(), 2u);
            ASSERT_EQ(qube.tags.size(), 2u);
        }
        committed = now;
    }
    EXPECT_GT(acknowledged_total, 0);  // the kills did land among commits
    std::printf("crash test: %d acknowledged commits over 20 kills, %d in the store\n", acknowledged_total,
                committed);
}

}  // namespace
}  // namespace aerie::admin
