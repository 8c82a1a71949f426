#include "admin/store.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string_view>
#include <unordered_map>

namespace aerie::admin {
namespace {

namespace fs = std::filesystem;

// kMigrations[n] turns a version-n store into a version-(n+1) one. All pending steps run in
// the one transaction that opens the store, so a store is never left half migrated.
// Version 0 is an empty file.
constexpr const char* kMigrations[] = {
    R"sql(
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value ANY NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('schema_version', 0);

    CREATE TABLE qubes (
        uuid TEXT PRIMARY KEY,
        qid INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL UNIQUE,
        klass TEXT NOT NULL,
        notes TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE TABLE qube_properties (
        uuid TEXT NOT NULL REFERENCES qubes (uuid) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (uuid, name)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE qube_features (
        uuid TEXT NOT NULL REFERENCES qubes (uuid) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (uuid, key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE qube_tags (
        uuid TEXT NOT NULL REFERENCES qubes (uuid) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (uuid, tag)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE global_properties (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE labels (
        "index" INTEGER PRIMARY KEY CHECK ("index" > 8),
        name TEXT NOT NULL UNIQUE,
        color TEXT NOT NULL
    ) STRICT;
    )sql",
};
static_assert(std::size(kMigrations) == Store::kSchemaVersion, "one migration step per version");
static_assert(kMaxDefaultLabel == 8, "the labels table's CHECK assumes 8 default labels");

constexpr int kBusyTimeoutMs = 5000;

std::string describe(const fs::path& path) {
    return "Aerie store " + path.string();
}

[[noreturn]] void fail(const fs::path& path, std::string_view what) {
    throw StoreError(fmt::format("{}: {}", describe(path), what));
}

[[noreturn]] void fail(sqlite3* db, const fs::path& path, std::string_view what) {
    throw StoreError(fmt::format("{}: {}: {}", describe(path), what, sqlite3_errmsg(db)));
}

struct StmtDeleter {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

Stmt prepare(sqlite3* db, const fs::path& path, const char* sql, unsigned flags = SQLITE_PREPARE_PERSISTENT) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, sql, -1, flags, &stmt, nullptr) != SQLITE_OK)
        fail(db, path, fmt::format("cannot prepare \"{}\"", sql));
    return Stmt(stmt);
}

// One use of a statement: binds, steps, and resets it on the way out, so that no statement
// stays active (holding a snapshot or a lock) after an error.
class Query {
public:
    Query(sqlite3* db, const fs::path& path, sqlite3_stmt* stmt, std::string_view what)
        : db_(db), path_(path), stmt_(stmt), what_(what) {}
    ~Query() { sqlite3_reset(stmt_); }
    Query(const Query&) = delete;
    Query& operator=(const Query&) = delete;

    Query& bind(std::string_view text) {
        if (text.size() > INT32_MAX) fail(path_, fmt::format("{}: a value is too long", what_));
        check(sqlite3_bind_text(stmt_, ++bound_, text.data() ? text.data() : "",
                                static_cast<int>(text.size()), SQLITE_STATIC));
        return *this;
    }
    Query& bind(std::int64_t value) {
        check(sqlite3_bind_int64(stmt_, ++bound_, value));
        return *this;
    }

    bool next() {  // true while there is a row
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc != SQLITE_DONE) fail(db_, path_, what_);
        return false;
    }
    void run() {
        while (next()) {
        }
    }
    int changes() const { return sqlite3_changes(db_); }

    std::string_view text(int column) const {
        auto data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
        return {data ? data : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column))};
    }
    std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }

private:
    void check(int rc) {
        if (rc != SQLITE_OK) fail(db_, path_, what_);
    }

    sqlite3* db_;
    const fs::path& path_;
    sqlite3_stmt* stmt_;
    std::string_view what_;
    int bound_ = 0;
};

// Steps a statement where nothing may be thrown (destructors); errors are left to SQLite.
void step_quietly(const Stmt& stmt) {
    sqlite3_step(stmt.get());
    sqlite3_reset(stmt.get());
}

// Runs statements that return no rows (schema scripts, pragmas).
void exec(sqlite3* db, const fs::path& path, const char* sql, std::string_view what) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(db, path, what);
}

// A new file's directory entry must reach the disk too, or a power cut could lose the store.
void sync_directory(const fs::path& file) {
    fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        int error = errno;
        if (fd >= 0) ::close(fd);
        fail(file, fmt::format("cannot sync directory {}: {}", dir.string(), std::strerror(error)));
    }
    ::close(fd);
}

}  // namespace

struct Store::Statements {
    Statements(sqlite3* database, const fs::path& file) : db(database), path(file) {}

    Query use(const Stmt& stmt, std::string_view what) const { return Query(db, path, stmt.get(), what); }
    Stmt make(const char* sql) const { return prepare(db, path, sql); }

    sqlite3* db;
    const fs::path& path;

    Stmt begin_immediate = make("BEGIN IMMEDIATE");
    Stmt begin_read = make("BEGIN DEFERRED");
    Stmt commit = make("COMMIT");
    Stmt rollback = make("ROLLBACK");
    Stmt schema_version = make("SELECT value FROM meta WHERE key = 'schema_version'");

    Stmt load_qubes = make("SELECT uuid, qid, name, klass, notes FROM qubes ORDER BY qid");
    Stmt load_properties = make("SELECT uuid, name, value FROM qube_properties ORDER BY uuid, name");
    Stmt load_features = make("SELECT uuid, key, value FROM qube_features ORDER BY uuid, key");
    Stmt load_tags = make("SELECT uuid, tag FROM qube_tags ORDER BY uuid, tag");
    Stmt load_globals = make("SELECT name, value FROM global_properties ORDER BY name");
    Stmt load_labels = make(R"(SELECT "index", name, color FROM labels ORDER BY "index")");

    Stmt insert_qube = make("INSERT INTO qubes (uuid, qid, name, klass, notes) VALUES (?, ?, ?, ?, ?)");
    Stmt delete_qube = make("DELETE FROM qubes WHERE uuid = ?");
    Stmt rename_qube = make("UPDATE qubes SET name = ? WHERE uuid = ?");
    Stmt set_notes = make("UPDATE qubes SET notes = ? WHERE uuid = ?");
    Stmt set_property = make(
        "INSERT INTO qube_properties (uuid, name, value) VALUES (?, ?, ?) "
        "ON CONFLICT (uuid, name) DO UPDATE SET value = excluded.value");
    Stmt reset_property = make("DELETE FROM qube_properties WHERE uuid = ? AND name = ?");
    Stmt set_feature = make(
        "INSERT INTO qube_features (uuid, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (uuid, key) DO UPDATE SET value = excluded.value");
    Stmt remove_feature = make("DELETE FROM qube_features WHERE uuid = ? AND key = ?");
    Stmt add_tag = make("INSERT INTO qube_tags (uuid, tag) VALUES (?, ?) ON CONFLICT DO NOTHING");
    Stmt remove_tag = make("DELETE FROM qube_tags WHERE uuid = ? AND tag = ?");
    Stmt set_global = make(
        "INSERT INTO global_properties (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value");
    Stmt reset_global = make("DELETE FROM global_properties WHERE name = ?");
    Stmt add_label = make(R"(INSERT INTO labels ("index", name, color) VALUES (?, ?, ?))");
    Stmt remove_label = make(R"(DELETE FROM labels WHERE "index" = ?)");
};

namespace {

// Reads the version inside the opening transaction. A database without `meta` is version 0
// when it is empty, and someone else's database otherwise.
int read_schema_version(sqlite3* db, const fs::path& path) {
    Stmt tables = prepare(db, path, "SELECT name FROM sqlite_schema WHERE type = 'table'", 0);
    Query query(db, path, tables.get(), "cannot read the schema");
    bool any_table = false;
    while (query.next()) {
        if (query.text(0) == "meta") {
            Stmt version = prepare(db, path, "SELECT value FROM meta WHERE key = 'schema_version'", 0);
            Query read(db, path, version.get(), "cannot read the schema version");
            if (!read.next()) fail(path, "the meta table holds no schema_version");
            return static_cast<int>(read.integer(0));
        }
        any_table = true;
    }
    if (any_table) fail(path, "this SQLite database is not an Aerie store (it has no meta table)");
    return 0;
}

void migrate(sqlite3* db, const fs::path& path, int from) {
    for (int version = from; version < Store::kSchemaVersion; ++version)
        exec(db, path, kMigrations[version],
             fmt::format("cannot migrate the schema from version {} to {}", version, version + 1));
    std::string set_version =
        fmt::format("UPDATE meta SET value = {} WHERE key = 'schema_version'", Store::kSchemaVersion);
    exec(db, path, set_version.c_str(), "cannot record the schema version");
}

// Brings the schema to kSchemaVersion in one write transaction (so two processes opening a
// new store at once cannot both create it). Returns the version found.
int open_schema(sqlite3* db, const fs::path& path) {
    exec(db, path, "BEGIN IMMEDIATE", "cannot lock the store to check its schema");
    try {
        int version = read_schema_version(db, path);
        if (version > Store::kSchemaVersion)
            fail(path, fmt::format("schema version {} is newer than this Aerie supports ({})", version,
                                   Store::kSchemaVersion));
        if (version < 0) fail(path, fmt::format("invalid schema version {}", version));
        if (version < Store::kSchemaVersion) migrate(db, path, version);
        exec(db, path, "COMMIT", "cannot commit the schema");
        return version;
    } catch (...) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
    }
}

void configure(sqlite3* db, const fs::path& path) {
    sqlite3_extended_result_codes(db, 1);
    if (sqlite3_busy_timeout(db, kBusyTimeoutMs) != SQLITE_OK) fail(db, path, "cannot set the busy timeout");
    // The first read of the file: this is where a file that is not a database is noticed.
    exec(db, path, "SELECT 1 FROM sqlite_schema LIMIT 1", "cannot open");
    Stmt wal = prepare(db, path, "PRAGMA journal_mode = WAL", 0);
    Query mode(db, path, wal.get(), "cannot open");
    if (!mode.next() || mode.text(0) != "wal")
        fail(path, fmt::format("cannot switch to write-ahead logging (journal mode is '{}')", mode.text(0)));
    if (sqlite3_db_readonly(db, "main") == 1) fail(path, "the file is read-only");
    // FULL: in WAL mode each commit fsyncs the log, so a returned commit survives a crash.
    exec(db, path, "PRAGMA synchronous = FULL", "cannot set synchronous=FULL");
    exec(db, path, "PRAGMA foreign_keys = ON", "cannot enable foreign keys");
}

// Reads a consistent snapshot when no transaction is open (inside one, it already is).
class ReadSnapshot {
public:
    ReadSnapshot(sqlite3* db, const fs::path& path, const Stmt& begin, const Stmt& rollback)
        : db_(db), rollback_(rollback), own_(sqlite3_get_autocommit(db) != 0) {
        if (own_) Query(db, path, begin.get(), "cannot start reading").run();
    }
    ~ReadSnapshot() {
        if (own_ && !sqlite3_get_autocommit(db_)) step_quietly(rollback_);
    }
    ReadSnapshot(const ReadSnapshot&) = delete;
    ReadSnapshot& operator=(const ReadSnapshot&) = delete;

private:
    sqlite3* db_;
    const Stmt& rollback_;
    bool own_;
};

using UuidIndex = std::unordered_map<std::string_view, StoredQube*>;

// Rows come ordered by uuid, so consecutive rows mostly belong to the same qube.
template <class Add>
void for_each_child_row(Query& query, const UuidIndex& index, Add add) {
    StoredQube* qube = nullptr;
    while (query.next()) {
        std::string_view uuid = query.text(0);
        if (!qube || qube->uuid != uuid) {
            auto it = index.find(uuid);
            qube = it == index.end() ? nullptr : it->second;
        }
        if (qube) add(*qube, query);
    }
}

// Calls `row` for each row of a one-off statement.
template <class Row>
void each_row(sqlite3* db, const fs::path& path, const char* sql, Row row) {
    Stmt stmt = prepare(db, path, sql, 0);
    Query query(db, path, stmt.get(), "cannot check integrity");
    while (query.next()) row(query);
}

}  // namespace

Store::Store(const fs::path& path) : path_(path) {
    std::error_code unknown;
    bool existed = fs::exists(path, unknown);
    // NOMUTEX: a Store is used by one thread at a time (its cached statements and open
    // transaction are shared state anyway), so SQLite's per-call locking is pure cost.
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    try {
        if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
            int error = db_ ? sqlite3_system_errno(db_) : 0;
            std::string why = error ? fmt::format(" ({})", std::strerror(error)) : "";
            fail(path_, fmt::format("cannot open: {}{}", sqlite3_errmsg(db_), why));
        }
        configure(db_, path_);
        open_schema(db_, path_);
        if (!existed) sync_directory(path_);
        statements_ = std::make_unique<Statements>(db_, path_);
    } catch (...) {
        statements_.reset();
        sqlite3_close_v2(db_);
        throw;
    }
}

Store::~Store() {
    statements_.reset();
    sqlite3_close_v2(db_);
}

int Store::schema_version() const {
    const Statements& s = *statements_;
    Query query = s.use(s.schema_version, "cannot read the schema version");
    if (!query.next()) fail(path_, "the meta table holds no schema_version");
    return static_cast<int>(query.integer(0));
}

StoredState Store::load() const {
    const Statements& s = *statements_;
    ReadSnapshot snapshot(db_, path_, s.begin_read, s.rollback);
    StoredState state;
    {
        Query query = s.use(s.load_qubes, "cannot read the qubes");
        while (query.next()) {
            StoredQube& qube = state.qubes.emplace_back();
            qube.uuid = query.text(0);
            qube.qid = static_cast<int>(query.integer(1));
            qube.name = query.text(2);
            qube.klass = query.text(3);
            qube.notes = query.text(4);
        }
    }
    UuidIndex index;
    index.reserve(state.qubes.size());
    for (StoredQube& qube : state.qubes) index.emplace(qube.uuid, &qube);

    auto add_pair = [](std::map<std::string, std::string>& map, Query& row) {
        map.emplace_hint(map.end(), row.text(1), row.text(2));
    };
    Query properties = s.use(s.load_properties, "cannot read the qube properties");
    for_each_child_row(properties, index, [&](StoredQube& q, Query& row) { add_pair(q.properties, row); });
    Query features = s.use(s.load_features, "cannot read the qube features");
    for_each_child_row(features, index, [&](StoredQube& q, Query& row) { add_pair(q.features, row); });
    Query tags = s.use(s.load_tags, "cannot read the qube tags");
    for_each_child_row(tags, index,
                       [](StoredQube& q, Query& row) { q.tags.emplace_hint(q.tags.end(), row.text(1)); });

    Query globals = s.use(s.load_globals, "cannot read the global properties");
    while (globals.next())
        state.global_properties.emplace_hint(state.global_properties.end(), globals.text(0), globals.text(1));
    Query labels = s.use(s.load_labels, "cannot read the labels");
    while (labels.next())
        state.custom_labels.push_back(Label{static_cast<int>(labels.integer(0)), std::string(labels.text(1)),
                                            std::string(labels.text(2))});
    return state;
}

std::string Store::check_integrity() const {
    std::vector<std::string> problems;
    try {
        const Statements& s = *statements_;
        ReadSnapshot snapshot(db_, path_, s.begin_read, s.rollback);
        each_row(db_, path_, "PRAGMA integrity_check", [&](Query& row) {
            if (row.text(0) != "ok") problems.emplace_back(row.text(0));
        });
        each_row(db_, path_, "PRAGMA foreign_key_check", [&](Query& row) {
            problems.push_back(
                fmt::format("row {} of {} refers to a missing {} row", row.integer(1), row.text(0), row.text(2)));
        });
        // The UNIQUE indexes guarantee these unless the file is damaged, so read the table itself.
        each_row(db_, path_, "SELECT name FROM qubes NOT INDEXED GROUP BY name HAVING count(*) > 1",
                 [&](Query& row) {
                     problems.push_back(fmt::format("several qubes are named '{}'", row.text(0)));
                 });
        each_row(db_, path_, "SELECT qid FROM qubes NOT INDEXED GROUP BY qid HAVING count(*) > 1",
                 [&](Query& row) {
                     problems.push_back(fmt::format("several qubes have qid {}", row.integer(0)));
                 });
        int version = schema_version();
        if (version != kSchemaVersion)
            problems.push_back(fmt::format("schema version is {}, expected {}", version, kSchemaVersion));
    } catch (const StoreError& e) {
        problems.emplace_back(e.what());  // a damaged file can make the checks themselves fail
    }
    std::string text;
    for (const std::string& problem : problems) text += (text.empty() ? "" : "\n") + problem;
    return text;
}

// --- Transaction ---

Store::Transaction::Transaction(Store& store) : store_(store) {
    if (store_.active_) fail(store_.path_, "a transaction is already open on this store");
    const Statements& s = *store_.statements_;
    s.use(s.begin_immediate, "cannot start a transaction").run();
    store_.active_ = this;
}

Store::Transaction::~Transaction() {
    if (store_.active_ != this) return;
    store_.active_ = nullptr;
    if (!done_ && !sqlite3_get_autocommit(store_.db_)) {
        // ROLLBACK does not fail in practice; if it did, the next BEGIN would report it.
        step_quietly(store_.statements_->rollback);
    }
}

template <class Change>
void Store::Transaction::change(Change&& body) {
    if (done_) fail(store_.path_, "the transaction is already committed");
    if (failed_)
        fail(store_.path_, "an earlier change of this transaction failed; it can only be rolled back");
    try {
        body(*store_.statements_);
    } catch (...) {
        failed_ = true;
        throw;
    }
}

namespace {

// For changes addressed to one qube that must exist.
void require_one_change(const Query& query, const fs::path& path, const std::string& uuid) {
    if (query.changes() != 1) fail(path, fmt::format("no qube with uuid {}", uuid));
}

}  // namespace

void Store::Transaction::add_qube(const StoredQube& qube) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot add qube '{}' (uuid {})", qube.name, qube.uuid);
        s.use(s.insert_qube, what)
            .bind(qube.uuid)
            .bind(qube.qid)
            .bind(qube.name)
            .bind(qube.klass)
            .bind(qube.notes)
            .run();
        for (const auto& [name, value] : qube.properties)
            s.use(s.set_property, what).bind(qube.uuid).bind(name).bind(value).run();
        for (const auto& [key, value] : qube.features)
            s.use(s.set_feature, what).bind(qube.uuid).bind(key).bind(value).run();
        for (const std::string& tag : qube.tags) s.use(s.add_tag, what).bind(qube.uuid).bind(tag).run();
    });
}

void Store::Transaction::remove_qube(const std::string& uuid) {
    change([&](const Statements& s) {
        Query query = s.use(s.delete_qube, "cannot remove qube " + uuid);
        query.bind(uuid).run();
        require_one_change(query, s.path, uuid);
    });
}

void Store::Transaction::rename_qube(const std::string& uuid, const std::string& new_name) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot rename qube {} to '{}'", uuid, new_name);
        Query query = s.use(s.rename_qube, what);
        query.bind(new_name).bind(uuid).run();
        require_one_change(query, s.path, uuid);
    });
}

void Store::Transaction::set_notes(const std::string& uuid, const std::string& notes) {
    change([&](const Statements& s) {
        Query query = s.use(s.set_notes, "cannot set the notes of qube " + uuid);
        query.bind(notes).bind(uuid).run();
        require_one_change(query, s.path, uuid);
    });
}

void Store::Transaction::set_property(const std::string& uuid, const std::string& name,
                                      const std::string& value) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot set property '{}' of qube {}", name, uuid);
        s.use(s.set_property, what).bind(uuid).bind(name).bind(value).run();
    });
}

void Store::Transaction::reset_property(const std::string& uuid, const std::string& name) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot reset property '{}' of qube {}", name, uuid);
        s.use(s.reset_property, what).bind(uuid).bind(name).run();
    });
}

void Store::Transaction::set_feature(const std::string& uuid, const std::string& key,
                                     const std::string& value) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot set feature '{}' of qube {}", key, uuid);
        s.use(s.set_feature, what).bind(uuid).bind(key).bind(value).run();
    });
}

void Store::Transaction::remove_feature(const std::string& uuid, const std::string& key) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot remove feature '{}' of qube {}", key, uuid);
        s.use(s.remove_feature, what).bind(uuid).bind(key).run();
    });
}

void Store::Transaction::add_tag(const std::string& uuid, const std::string& tag) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot add tag '{}' to qube {}", tag, uuid);
        s.use(s.add_tag, what).bind(uuid).bind(tag).run();
    });
}

void Store::Transaction::remove_tag(const std::string& uuid, const std::string& tag) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot remove tag '{}' from qube {}", tag, uuid);
        s.use(s.remove_tag, what).bind(uuid).bind(tag).run();
    });
}

void Store::Transaction::set_global(const std::string& name, const std::string& value) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot set global property '{}'", name);
        s.use(s.set_global, what).bind(name).bind(value).run();
    });
}

void Store::Transaction::reset_global(const std::string& name) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot reset global property '{}'", name);
        s.use(s.reset_global, what).bind(name).run();
    });
}

void Store::Transaction::add_label(const Label& label) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot add label {} '{}'", label.index, label.name);
        s.use(s.add_label, what).bind(label.index).bind(label.name).bind(label.color).run();
    });
}

void Store::Transaction::remove_label(int index) {
    change([&](const Statements& s) {
        std::string what = fmt::format("cannot remove label {}", index);
        s.use(s.remove_label, what).bind(index).run();
    });
}

void Store::Transaction::commit() {
    if (done_) fail(store_.path_, "the transaction is already committed");
    if (failed_) fail(store_.path_, "cannot commit: an earlier change of this transaction failed");
    // SQLite rolls a transaction back by itself after some errors (disk full, I/O).
    if (sqlite3_get_autocommit(store_.db_))
        fail(store_.path_, "cannot commit: the transaction was rolled back");
    const Statements& s = *store_.statements_;
    try {
        s.use(s.commit, "cannot commit").run();
    } catch (...) {
        failed_ = true;
        throw;
    }
    done_ = true;
    store_.active_ = nullptr;
}

}  // namespace aerie::admin
