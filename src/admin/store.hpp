// The admin daemon's persistent store: one SQLite database holding every
// qube's record, properties, features, tags and notes, the global
// properties and the custom labels. Changes are grouped in transactions;
// when commit() returns, the change is on disk (WAL, synchronous=FULL), so
// a kill -9 at any point loses no acknowledged change and leaves no half.
// The schema carries a version number; open() migrates older stores.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "admin/labels.hpp"

struct sqlite3;

namespace aerie::admin {

struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One qube as stored. Values are the text the Admin API shows; a property
// absent from `properties` is at its default.
struct StoredQube {
    std::string uuid;  // the key: stable across renames
    int qid = 0;
    std::string name;
    std::string klass;  // "AppVM", "TemplateVM", ...
    std::map<std::string, std::string> properties;
    std::map<std::string, std::string> features;
    std::set<std::string> tags;
    std::string notes;
};

struct StoredState {
    std::vector<StoredQube> qubes;                         // by qid
    std::map<std::string, std::string> global_properties;  // set ones only
    std::vector<Label> custom_labels;                      // index > 8
};

class Store {
public:
    static constexpr int kSchemaVersion = 1;

    // Opens (creating or migrating) the store at `path`. Throws StoreError
    // naming the file and what was wrong (not a database, a newer schema...).
    explicit Store(const std::filesystem::path& path);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    StoredState load() const;
    int schema_version() const;
    // SQLite's integrity_check plus Aerie's own invariants (no orphan rows,
    // unique names and qids). Empty when all is well, else what is wrong.
    std::string check_integrity() const;

    // A group of changes applied all or nothing. Without commit() (an
    // exception, an early return) the destructor rolls back.
    class Transaction {
    public:
        explicit Transaction(Store& store);
        ~Transaction();
        Transaction(const Transaction&) = delete;
        Transaction& operator=(const Transaction&) = delete;

        void add_qube(const StoredQube& qube);  // with its properties, features, tags, notes
        void remove_qube(const std::string& uuid);
        void rename_qube(const std::string& uuid, const std::string& new_name);
        void set_property(const std::string& uuid, const std::string& name, const std::string& value);
        void reset_property(const std::string& uuid, const std::string& name);
        void set_feature(const std::string& uuid, const std::string& key, const std::string& value);
        void remove_feature(const std::string& uuid, const std::string& key);
        void add_tag(const std::string& uuid, const std::string& tag);
        void remove_tag(const std::string& uuid, const std::string& tag);
        void set_notes(const std::string& uuid, const std::string& notes);
        void set_global(const std::string& name, const std::string& value);
        void reset_global(const std::string& name);
        void add_label(const Label& label);
        void remove_label(int index);

        void commit();  // durable on return; throws StoreError

    private:
        // Runs one change; if it throws, the transaction can only be rolled back.
        template <class Change>
        void change(Change&& body);

        Store& store_;
        bool done_ = false;
        bool failed_ = false;
    };

private:
    friend class Transaction;
    struct Statements;
    sqlite3* db_ = nullptr;
    std::unique_ptr<Statements> statements_;
    std::filesystem::path path_;
    Transaction* active_ = nullptr;  // the open transaction: one at a time
};

}  // namespace aerie::admin
