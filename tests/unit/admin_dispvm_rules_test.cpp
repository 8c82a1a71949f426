// The rules of disposables and their preloading on their own: which features
// the daemon keeps to itself, which values the Admin API refuses, the preload
// queue and its settings (max, threshold, delay), how many preloads to start,
// MemAvailable, disposable templates, inheritance from the template, outdated
// preloads and new disposable ids.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "admin/dispvm_rules.hpp"
#include "admin/model.hpp"

namespace aerie::admin {
namespace {

using Props = std::map<std::string, std::string>;
using Names = std::vector<std::string>;

std::string uuid_for(int qid) {
    std::string digits = std::to_string(qid);
    return "00000000-0000-4000-8000-" + std::string(12 - digits.size(), '0') + digits;
}

Qube make_qube(const std::string& klass, const std::string& name, int qid, Props properties = {}) {
    Qube q;
    q.klass = klass;
    q.name = name;
    q.qid = qid;
    q.uuid = uuid_for(qid);
    q.properties = std::move(properties);
    return q;
}

// A disposable as CreateDisposable makes it before inheriting: only its template set.
Qube make_disp(const std::string& name, int qid, const std::string& tpl) {
    return make_qube("DispVM", name, qid, {{"template", tpl}});
}

Names names_of(const std::vector<Qube*>& qubes) {
    Names out;
    for (const Qube* q : qubes) out.push_back(q->name);
    std::sort(out.begin(), out.end());
    return out;
}

// A template, a disposable template "dvm" and a second one "dvm2", an AppVM "work".
class DispvmRulesTest : public ::testing::Test {
protected:
    void SetUp() override {
        model.add(make_qube("TemplateVM", "fedora", 1, {{"label", "black"}}));
        model.add(make_qube("AppVM", "dvm", 2,
                            {{"template", "fedora"}, {"template_for_dispvms", "True"}, {"label", "red"}}));
        model.add(make_qube("AppVM", "dvm2", 3,
                            {{"template", "fedora"}, {"template_for_dispvms", "True"}, {"label", "green"}}));
        model.add(make_qube("AppVM", "work", 4, {{"template", "fedora"}, {"label", "blue"}}));
    }

    Qube& q(const std::string& name) {
        Qube* qube = model.find(name);
        if (!qube) throw std::runtime_error("no qube " + name);
        return *qube;
    }
    Qube& dom0() { return q("dom0"); }
    // Adds a disposable of `tpl` that has inherited from it, as a new one does.
    Qube& add_inherited_disp(const std::string& name, int qid, const std::string& tpl) {
        Qube disp = make_disp(name, qid, tpl);
        inherit_from_template(disp, q(tpl));
        model.add(std::move(disp));
        return q(name);
    }

    Model model;
};

// --- managed features and the Admin API's checks ---------------------------------------

TEST(DispvmRulesFeatures, OnlyTheThreeStateFeaturesAreManaged) {
    EXPECT_TRUE(is_managed_preload_feature("preload-dispvm"));
    EXPECT_TRUE(is_managed_preload_feature("preload-dispvm-in-progress"));
    EXPECT_TRUE(is_managed_preload_feature("preload-dispvm-completed"));

    EXPECT_FALSE(is_managed_preload_feature("preload-dispvm-max"));
    EXPECT_FALSE(is_managed_preload_feature("preload-dispvm-threshold"));
    EXPECT_FALSE(is_managed_preload_feature("preload-dispvm-delay"));
    EXPECT_FALSE(is_managed_preload_feature("preload-dispvm-foo"));
    EXPECT_FALSE(is_managed_preload_feature("preload-dispv"));
    EXPECT_FALSE(is_managed_preload_feature("Preload-dispvm"));
    EXPECT_FALSE(is_managed_preload_feature("preload-dispvm "));
    EXPECT_FALSE(is_managed_preload_feature(""));
    EXPECT_FALSE(is_managed_preload_feature("gui"));
}

TEST(DispvmRulesFeatures, PreloadMaxMustBeDigitsOrEmpty) {
    for (const char* ok : {"", "0", "2", "10"})
        EXPECT_EQ(api_feature_refusal("preload-dispvm-max", ok), "") << '"' << ok << '"';
    for (const char* bad : {"a", "-1", "1 1", "1.5", " 1", "+1"}) {
        std::string why = api_feature_refusal("preload-dispvm-max", bad);
        EXPECT_NE(why, "") << '"' << bad << '"';
        EXPECT_NE(why.find("preload-dispvm-max"), std::string::npos) << why;
    }
}

TEST(DispvmRulesFeatures, PreloadThresholdMustBeDigitsOrEmpty) {
    for (const char* ok : {"", "0", "1", "4096"})
        EXPECT_EQ(api_feature_refusal("preload-dispvm-threshold", ok), "") << '"' << ok << '"';
    for (const char* bad : {"a", "-1", "1 1", "2.5"}) {
        std::string why = api_feature_refusal("preload-dispvm-threshold", bad);
        EXPECT_NE(why, "") << '"' << bad << '"';
        EXPECT_NE(why.find("preload-dispvm-threshold"), std::string::npos) << why;
    }
}

TEST(DispvmRulesFeatures, PreloadDelayMustBeANumberOrEmpty) {
    for (const char* ok : {"", "0", "1", "-1", "3.14", "1e2", "-0.5"})
        EXPECT_EQ(api_feature_refusal("preload-dispvm-delay", ok), "") << '"' << ok << '"';
    for (const char* bad : {"a", ".2.", "1 1", "0x10", "1a"}) {
        std::string why = api_feature_refusal("preload-dispvm-delay", bad);
        EXPECT_NE(why, "") << '"' << bad << '"';
        EXPECT_NE(why.find("preload-dispvm-delay"), std::string::npos) << why;
    }
}

TEST(DispvmRulesFeatures, OtherFeaturesAreNeverRefused) {
    for (const char* key : {"gui", "servicevm", "preload-dispvm-foo", "preload-dispvm-maximum", ""})
        for (const char* value : {"", "a", "-1", "1 1", "0x10", ".2."})
            EXPECT_EQ(api_feature_refusal(key, value), "") << key << '=' << value;
}

TEST(DispvmRulesFeatures, FeatureTrueMeansSetAndNotEmpty) {
    Qube qube = make_qube("AppVM", "x", 9);
    qube.features["set"] = "1";
    qube.features["zero"] = "0";  // Python's bool("0") is True
    qube.features["empty"] = "";
    EXPECT_TRUE(feature_true(qube, "set"));
    EXPECT_TRUE(feature_true(qube, "zero"));
    EXPECT_FALSE(feature_true(qube, "empty"));
    EXPECT_FALSE(feature_true(qube, "missing"));
}

// --- the queue ---------------------------------------------------------------------------

TEST(DispvmRulesQueue, QueueIsSpaceSeparatedAndRoundTrips) {
    Qube tpl = make_qube("AppVM", "dvm", 2);
    tpl.features["preload-dispvm"] = "disp12 disp7 disp3000";
    Names queue = preload_queue(tpl);
    EXPECT_EQ(queue, (Names{"disp12", "disp7", "disp3000"}));
    EXPECT_EQ(format_queue(queue), "disp12 disp7 disp3000");

    tpl.features["preload-dispvm"] = "disp1";
    EXPECT_EQ(preload_queue(tpl), (Names{"disp1"}));
    EXPECT_EQ(format_queue({"disp1"}), "disp1");

    for (const Names& names : {Names{}, Names{"a"}, Names{"a", "b"}, Names{"disp1", "disp2", "disp3", "disp4"}}) {
        tpl.features["preload-dispvm"] = format_queue(names);
        EXPECT_EQ(preload_queue(tpl), names) << format_queue(names);
    }
}

TEST(DispvmRulesQueue, EmptyOrMissingFeatureIsAnEmptyQueue) {
    Qube tpl = make_qube("AppVM", "dvm", 2);
    EXPECT_TRUE(preload_queue(tpl).empty());
    tpl.features["preload-dispvm"] = "";
    EXPECT_TRUE(preload_queue(tpl).empty());
    EXPECT_EQ(format_queue({}), "");
    // Stray spaces make no empty names.
    tpl.features["preload-dispvm"] = " disp1  disp2 ";
    EXPECT_EQ(preload_queue(tpl), (Names{"disp1", "disp2"}));
}

// --- preload-dispvm-max ------------------------------------------------------------------

TEST_F(DispvmRulesTest, PreloadMaxIsTheTemplatesOwn) {
    EXPECT_EQ(preload_max(model, q("dvm")), 0);  // not set anywhere
    q("dvm").features["preload-dispvm-max"] = "2";
    EXPECT_EQ(preload_max(model, q("dvm")), 2);
    q("dvm").features["preload-dispvm-max"] = "";
    EXPECT_EQ(preload_max(model, q("dvm")), 0);
}

TEST_F(DispvmRulesTest, Dom0sPreloadMaxWinsForTheGlobalDefaultDispvm) {
    q("dvm").features["preload-dispvm-max"] = "2";
    dom0().features["preload-dispvm-max"] = "5";
    // dom0 has it, but dvm is not the global default_dispvm: its own value.
    EXPECT_EQ(preload_max(model, q("dvm")), 2);
    model.set(nullptr, "default_dispvm", "dvm2");
    EXPECT_EQ(preload_max(model, q("dvm")), 2);
    // The default: dom0's value.
    model.set(nullptr, "default_dispvm", "dvm");
    EXPECT_EQ(preload_max(model, q("dvm")), 5);
    // Even an empty or zero value on dom0 wins.
    dom0().features["preload-dispvm-max"] = "";
    EXPECT_EQ(preload_max(model, q("dvm")), 0);
    dom0().features["preload-dispvm-max"] = "0";
    EXPECT_EQ(preload_max(model, q("dvm")), 0);
    // dom0 without the feature: the template's own again.
    dom0().features.erase("preload-dispvm-max");
    EXPECT_EQ(preload_max(model, q("dvm")), 2);
    // The default template without its own value and dom0 without one.
    q("dvm").features.erase("preload-dispvm-max");
    EXPECT_EQ(preload_max(model, q("dvm")), 0);
}

TEST_F(DispvmRulesTest, Dom0sPreloadMaxDoesNotApplyToOtherTemplates) {
    model.set(nullptr, "default_dispvm", "dvm");
    dom0().features["preload-dispvm-max"] = "5";
    EXPECT_EQ(preload_max(model, q("dvm2")), 0);
    q("dvm2").features["preload-dispvm-max"] = "1";
    EXPECT_EQ(preload_max(model, q("dvm2")), 1);
    EXPECT_EQ(preload_max(model, q("dvm")), 5);
}

TEST_F(DispvmRulesTest, NonDigitPreloadMaxReadsAsZero) {
    for (const char* bad : {"a", "-1", "1 1", "2.5", " 3"}) {
        q("dvm").features["preload-dispvm-max"] = bad;
        EXPECT_EQ(preload_max(model, q("dvm")), 0) << bad;
    }
    q("dvm").features["preload-dispvm-max"] = "3";
    model.set(nullptr, "default_dispvm", "dvm");
    dom0().features["preload-dispvm-max"] = "x";
    EXPECT_EQ(preload_max(model, q("dvm")), 0);  // dom0's, even unreadable
}

// --- threshold and delay -----------------------------------------------------------------

TEST_F(DispvmRulesTest, ThresholdIsDom0sFeatureInMib) {
    EXPECT_EQ(preload_threshold_mib(model), 0);
    dom0().features["preload-dispvm-threshold"] = "";
    EXPECT_EQ(preload_threshold_mib(model), 0);
    dom0().features["preload-dispvm-threshold"] = "1024";
    EXPECT_EQ(preload_threshold_mib(model), 1024);
    dom0().features["preload-dispvm-threshold"] = "abc";
    EXPECT_EQ(preload_threshold_mib(model), 0);
    // The template's own is not read.
    dom0().features.erase("preload-dispvm-threshold");
    q("dvm").features["preload-dispvm-threshold"] = "700";
    EXPECT_EQ(preload_threshold_mib(model), 0);
}

TEST_F(DispvmRulesTest, DelayIsTheTemplatesElseDom0sElseThreeSeconds) {
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), 3.0);
    dom0().features["preload-dispvm-delay"] = "5";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), 5.0);
    q("dvm").features["preload-dispvm-delay"] = "1.5";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), 1.5);
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm2")), 5.0);  // dom0's
    // Empty: no delay (and the template's empty value still hides dom0's).
    q("dvm").features["preload-dispvm-delay"] = "";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), 0.0);
    // Negative: kept (refill only when the queue is empty).
    q("dvm").features["preload-dispvm-delay"] = "-1";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), -1.0);
    dom0().features["preload-dispvm-delay"] = "-2.5";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm2")), -2.5);
    dom0().features["preload-dispvm-delay"] = "";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm2")), 0.0);
}

TEST_F(DispvmRulesTest, DelayIsNotTakenFromTheTemplatesTemplate) {
    q("fedora").features["preload-dispvm-delay"] = "9";
    EXPECT_DOUBLE_EQ(preload_delay(model, q("dvm")), 3.0);
}

// --- how many to start -------------------------------------------------------------------

TEST(DispvmRulesFill, WantsWhatIsMissingWhenMemoryIsUnknown) {
    EXPECT_EQ(preload_fill_count(3, 0, std::nullopt, 0, 400), 3);
    EXPECT_EQ(preload_fill_count(3, 1, std::nullopt, 0, 400), 2);
    EXPECT_EQ(preload_fill_count(3, 1, std::nullopt, 100000, 400), 2);  // threshold unused
    EXPECT_EQ(preload_fill_count(3, 3, std::nullopt, 0, 400), 0);
}

TEST(DispvmRulesFill, NeverNegative) {
    EXPECT_EQ(preload_fill_count(2, 5, std::nullopt, 0, 400), 0);
    EXPECT_EQ(preload_fill_count(0, 1, 100000, 0, 400), 0);
    EXPECT_EQ(preload_fill_count(0, 0, 100000, 0, 400), 0);
    EXPECT_EQ(preload_fill_count(-3, 0, 100000, 0, 400), 0);
}

TEST(DispvmRulesFill, LimitedByTheFreeMemoryAboveTheThreshold) {
    // (2000 - 1000) / 400 = 2 of the 5 wanted.
    EXPECT_EQ(preload_fill_count(5, 0, 2000, 1000, 400), 2);
    // (2200 - 1000) / 400 = 3, 4 wanted.
    EXPECT_EQ(preload_fill_count(5, 1, 2200, 1000, 400), 3);
    // Enough memory: what is wanted.
    EXPECT_EQ(preload_fill_count(5, 1, 100000, 1000, 400), 4);
    // Without a threshold, all the available memory counts: 1199 / 400 = 2.
    EXPECT_EQ(preload_fill_count(5, 0, 1199, 0, 400), 2);
    EXPECT_EQ(preload_fill_count(5, 0, 1200, 0, 400), 3);
    // Not enough for one.
    EXPECT_EQ(preload_fill_count(5, 0, 1399, 1000, 400), 0);
}

TEST(DispvmRulesFill, NothingBelowTheThreshold) {
    EXPECT_EQ(preload_fill_count(5, 0, 500, 1000, 400), 0);
    EXPECT_EQ(preload_fill_count(5, 0, 1000, 1000, 400), 0);
    EXPECT_EQ(preload_fill_count(5, 0, 0, 1000, 1), 0);
}

// --- MemAvailable ------------------------------------------------------------------------

class DispvmRulesMeminfo : public ::testing::Test {
protected:
    void SetUp() override {
        dir = std::filesystem::path(::testing::TempDir()) /
              ("aerie_dispvm_rules_" + std::to_string(::getpid()) + "_" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir);
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::filesystem::path write(const std::string& name, const std::string& text) {
        auto path = dir / name;
        std::ofstream(path) << text;
        return path;
    }
    std::filesystem::path dir;
};

TEST_F(DispvmRulesMeminfo, MemAvailableInKibBecomesMib) {
    auto path = write("meminfo",
                      "MemTotal:       16318412 kB\n"
                      "MemFree:          524288 kB\n"
                      "MemAvailable:    2097152 kB\n"
                      "Buffers:          102400 kB\n"
                      "HugePages_Total:       0\n"
                      "Hugepagesize:       2048 kB\n");
    auto mib = mem_available_mib(path);
    ASSERT_TRUE(mib.has_value());
    EXPECT_EQ(*mib, 2048);
}

TEST_F(DispvmRulesMeminfo, MemAvailableAfterLinesWithoutUnit) {
    auto path = write("meminfo",
                      "MemTotal:       16318412 kB\n"
                      "HugePages_Total:       0\n"
                      "HugePages_Free:        0\n"
                      "MemAvailable:    1048576 kB\n");
    auto mib = mem_available_mib(path);
    ASSERT_TRUE(mib.has_value());
    EXPECT_EQ(*mib, 1024);
}

TEST_F(DispvmRulesMeminfo, MissingKeyOrFileIsUnknown) {
    auto path = write("meminfo",
                      "MemTotal:       16318412 kB\n"
                      "MemFree:          524288 kB\n"
                      "Buffers:          102400 kB\n");
    EXPECT_FALSE(mem_available_mib(path).has_value());
    EXPECT_FALSE(mem_available_mib(write("empty", "")).has_value());
    EXPECT_FALSE(mem_available_mib(dir / "no-such-file").has_value());
}

// --- disposable templates, disposables, preloads -----------------------------------------

TEST_F(DispvmRulesTest, OnlyAnAppVmWithTemplateForDispvmsIsADisposableTemplate) {
    EXPECT_TRUE(is_disposable_template(model, q("dvm")));
    EXPECT_TRUE(is_disposable_template(model, q("dvm2")));
    EXPECT_FALSE(is_disposable_template(model, q("work")));  // default False
    q("work").properties["template_for_dispvms"] = "False";
    EXPECT_FALSE(is_disposable_template(model, q("work")));
    EXPECT_FALSE(is_disposable_template(model, dom0()));

    // Other classes with the property set are not.
    q("fedora").properties["template_for_dispvms"] = "True";
    EXPECT_FALSE(is_disposable_template(model, q("fedora")));
    model.add(make_qube("StandaloneVM", "standalone", 10, {{"template_for_dispvms", "True"}}));
    EXPECT_FALSE(is_disposable_template(model, q("standalone")));
    Qube& disp = add_inherited_disp("disp1", 11, "dvm");
    EXPECT_FALSE(is_disposable_template(model, disp));
}

TEST_F(DispvmRulesTest, DispvmsOfAreTheDisposablesOfThatTemplate) {
    EXPECT_TRUE(dispvms_of(model, q("dvm")).empty());
    model.add(make_disp("disp1", 10, "dvm"));
    model.add(make_disp("disp2", 11, "dvm"));
    model.add(make_disp("disp3", 12, "dvm2"));
    // An AppVM of the same template is no disposable.
    model.add(make_qube("AppVM", "other", 13, {{"template", "dvm"}}));
    EXPECT_EQ(names_of(dispvms_of(model, q("dvm"))), (Names{"disp1", "disp2"}));
    EXPECT_EQ(names_of(dispvms_of(model, q("dvm2"))), (Names{"disp3"}));
    EXPECT_TRUE(dispvms_of(model, q("work")).empty());
    // The pointers are the model's own.
    for (Qube* disp : dispvms_of(model, q("dvm"))) EXPECT_EQ(disp, model.find(disp->name));
}

TEST_F(DispvmRulesTest, APreloadIsQueuedOrInProgress) {
    model.add(make_disp("disp1", 10, "dvm"));
    model.add(make_disp("disp2", 11, "dvm"));
    model.add(make_disp("disp3", 12, "dvm2"));
    EXPECT_FALSE(is_preload(model, q("disp1")));

    q("dvm").features["preload-dispvm"] = "disp1";
    EXPECT_TRUE(is_preload(model, q("disp1")));
    EXPECT_FALSE(is_preload(model, q("disp2")));
    // Queued on another template: not its own queue.
    q("dvm").features["preload-dispvm"] = "disp1 disp3";
    EXPECT_FALSE(is_preload(model, q("disp3")));
    q("dvm2").features["preload-dispvm"] = "disp3";
    EXPECT_TRUE(is_preload(model, q("disp3")));

    // Taken from the queue, not yet used.
    q("disp2").features["preload-dispvm-in-progress"] = "1";
    EXPECT_TRUE(is_preload(model, q("disp2")));
    q("disp2").features["preload-dispvm-in-progress"] = "";
    EXPECT_FALSE(is_preload(model, q("disp2")));

    // Only a DispVM is a preload.
    q("dvm").features["preload-dispvm"] = "disp1 work";
    EXPECT_FALSE(is_preload(model, q("work")));
    q("work").features["preload-dispvm-in-progress"] = "1";
    EXPECT_FALSE(is_preload(model, q("work")));

    // The is_preload property says the same.
    EXPECT_EQ(model.value_text(&q("disp1"), "is_preload"), "True");
    EXPECT_EQ(model.value_text(&q("disp2"), "is_preload"), "False");
}

// --- inheritance -------------------------------------------------------------------------

TEST_F(DispvmRulesTest, InheritsFeaturesExceptThePreloadOnes) {
    Qube& tpl = q("dvm");
    tpl.features = {{"gui", "1"},
                    {"servicevm", ""},
                    {"preload-dispvm", "disp5 disp6"},
                    {"preload-dispvm-max", "2"},
                    {"preload-dispvm-delay", "1"},
                    {"preload-dispvm-threshold", "100"},
                    {"preload-dispvm-in-progress", "1"},
                    {"preload-dispvm-completed", "1"}};
    Qube disp = make_disp("disp1", 10, "dvm");
    disp.features["own"] = "x";
    inherit_from_template(disp, tpl);
    EXPECT_EQ(disp.features, (Props{{"gui", "1"}, {"servicevm", ""}, {"own", "x"}}));
}

TEST_F(DispvmRulesTest, InheritsTags) {
    q("dvm").tags = {"work-files", "audit"};
    Qube disp = make_disp("disp1", 10, "dvm");
    disp.tags = {"disp-own"};
    inherit_from_template(disp, q("dvm"));
    EXPECT_EQ(disp.tags, (std::set<std::string>{"audit", "disp-own", "work-files"}));
}

TEST_F(DispvmRulesTest, InheritsExplicitWritablePropertiesOfADispvm) {
    Qube& tpl = q("dvm");
    tpl.properties["vcpus"] = "4";
    tpl.properties["memory"] = "800";
    tpl.properties["kernelopts"] = "quiet";
    tpl.properties["netvm"] = "";
    tpl.properties["debug"] = "True";
    // Ignored ones: they name or place the qube, or are its own.
    tpl.properties["autostart"] = "True";
    tpl.properties["include_in_backups"] = "False";
    tpl.properties["name"] = "dvm";
    // Not writable on a DispVM, or not a DispVM's at all.
    tpl.properties["dns"] = "1.2.3.4";
    tpl.properties["no_such_property"] = "x";

    Qube disp = make_qube("DispVM", "disp1", 10);
    disp.properties["vcpus"] = "1";  // its own stays
    inherit_from_template(disp, tpl);

    EXPECT_EQ(disp.properties, (Props{{"debug", "True"},
                                      {"kernelopts", "quiet"},
                                      {"label", "red"},
                                      {"memory", "800"},
                                      {"netvm", ""},
                                      {"vcpus", "1"}}));
    // In particular: not the template's template, nor template_for_dispvms.
    EXPECT_EQ(disp.properties.count("template"), 0u);
    EXPECT_EQ(disp.properties.count("template_for_dispvms"), 0u);
    EXPECT_EQ(disp.properties.count("autostart"), 0u);
    EXPECT_EQ(disp.properties.count("name"), 0u);
    EXPECT_EQ(disp.name, "disp1");
}

TEST_F(DispvmRulesTest, InheritingKeepsTheDisposablesOwnTemplate) {
    Qube disp = make_disp("disp1", 10, "dvm");
    inherit_from_template(disp, q("dvm"));  // dvm's own template is fedora
    EXPECT_EQ(disp.properties.at("template"), "dvm");
}

// --- outdated preloads -------------------------------------------------------------------

TEST_F(DispvmRulesTest, IgnoreListForOutdated) {
    for (const char* name : {"autostart", "mac", "name", "qid", "uuid", "template", "template_for_dispvms",
                             "include_in_backups", "default_dispvm", "is_preload", "auto_cleanup", "ip"})
        EXPECT_TRUE(ignored_for_outdated(name)) << name;
    for (const char* name : {"vcpus", "memory", "maxmem", "kernelopts", "netvm", "label", "debug", "virt_mode"})
        EXPECT_FALSE(ignored_for_outdated(name)) << name;
}

TEST_F(DispvmRulesTest, AFreshDisposableIsNotOutdated) {
    q("dvm").properties["vcpus"] = "4";
    q("dvm").properties["kernelopts"] = "quiet";
    q("dvm").properties["debug"] = "True";
    q("dvm").properties["autostart"] = "True";
    Qube& disp = add_inherited_disp("disp1", 10, "dvm");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{});
    Qube& plain = add_inherited_disp("disp2", 11, "dvm2");
    EXPECT_EQ(outdated_properties(model, plain, q("dvm2")), Names{});
}

TEST_F(DispvmRulesTest, AnExplicitValueChangedOnTheTemplateAfterwardsIsOutdated) {
    q("dvm").properties["vcpus"] = "4";
    Qube& disp = add_inherited_disp("disp1", 10, "dvm");
    model.set(&q("dvm"), "vcpus", "8");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{"vcpus"});
    // A newly set one whose default on the disposable is a constant.
    model.set(&q("dvm"), "debug", "True");
    Names outdated = outdated_properties(model, disp, q("dvm"));
    std::sort(outdated.begin(), outdated.end());
    EXPECT_EQ(outdated, (Names{"debug", "vcpus"}));
    // Set back: only debug remains.
    model.set(&q("dvm"), "vcpus", "4");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{"debug"});
    // A label change counts too.
    model.set(&q("dvm"), "debug", "False");
    model.set(&q("dvm"), "label", "green");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{"label"});
}

TEST_F(DispvmRulesTest, AValueTheDisposableTakesFromItsTemplateFollowsIt) {
    Qube& disp = add_inherited_disp("disp1", 10, "dvm");
    // memory was not set on dvm: the disposable's default is the template's value.
    model.set(&q("dvm"), "memory", "1000");
    EXPECT_EQ(model.value_text(&disp, "memory"), "1000");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{});
}

TEST_F(DispvmRulesTest, IgnoredPropertiesAreNeverOutdated) {
    Qube& disp = add_inherited_disp("disp1", 10, "dvm");
    model.set(&q("dvm"), "autostart", "True");
    ASSERT_NE(model.value_text(&disp, "autostart"), model.value_text(&q("dvm"), "autostart"));
    // mac differs by qid between any two qubes.
    ASSERT_NE(model.value_text(&disp, "mac"), model.value_text(&q("dvm"), "mac"));
    model.set(&q("dvm"), "installed_by_rpm", "True");
    model.set(&q("dvm"), "backup_timestamp", "1700000000");
    EXPECT_EQ(outdated_properties(model, disp, q("dvm")), Names{});
}

// --- disposable ids ----------------------------------------------------------------------

TEST_F(DispvmRulesTest, NewDispidIsInRangeAndDeterministicForASeed) {
    for (unsigned seed : {1u, 2u, 42u, 12345u}) {
        std::mt19937 a(seed), b(seed);
        auto first = new_dispid(model, a);
        auto second = new_dispid(model, b);
        ASSERT_TRUE(first.has_value());
        ASSERT_TRUE(second.has_value());
        EXPECT_EQ(*first, *second);
        EXPECT_GE(*first, 0);
        EXPECT_LE(*first, 9999);
    }
}

TEST_F(DispvmRulesTest, NewDispidSkipsNamesInUse) {
    // With the same seed each time, the generator would pick the same number
    // again: every pick must still be new.
    std::set<int> taken;
    for (int round = 0; round < 30; ++round) {
        std::mt19937 random(7);
        auto id = new_dispid(model, random);
        ASSERT_TRUE(id.has_value());
        EXPECT_GE(*id, 0);
        EXPECT_LE(*id, 9999);
        std::string name = "disp" + std::to_string(*id);
        EXPECT_EQ(model.find(name), nullptr) << name;
        EXPECT_TRUE(taken.insert(*id).second) << name;
        model.add(make_disp(name, 100 + round, "dvm"));
    }
}

TEST_F(DispvmRulesTest, NewDispidFindsTheLastFreeOne) {
    for (int id = 0; id <= 9999; ++id)
        if (id != 4321) model.add(make_disp("disp" + std::to_string(id), 100 + id, "dvm"));
    for (unsigned seed : {1u, 99u}) {
        std::mt19937 random(seed);
        auto id = new_dispid(model, random);
        ASSERT_TRUE(id.has_value());
        EXPECT_EQ(*id, 4321);
    }
}

}  // namespace
}  // namespace aerie::admin
