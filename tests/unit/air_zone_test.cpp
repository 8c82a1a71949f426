// The zone description two hosts exchange to pair: what is accepted, what is
// refused and why, and that a formatted zone reads back the same; the relay
// credentials in it, as the relay's key helpers make them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "air/relay_keys.hpp"
#include "air/zone.hpp"

namespace {

using aerie::air::format_zone;
using aerie::air::parse_zone;
using aerie::air::Zone;
using aerie::air::ZoneError;

const char* kGood = R"({"zone": "office", "address": "10.0.0.2:7022", "transport": "qubesair.SSHProxy",
                       "qubes": [{"name": "work", "label": "red"}, {"name": "vault", "label": "black"}]})";

std::string refusal(const std::string& text) {
    try {
        parse_zone(text);
    } catch (const ZoneError& e) {
        return e.what();
    }
    return "(accepted)";
}

TEST(AirZone, ReadsAGoodZone) {
    Zone z = parse_zone(kGood);
    EXPECT_EQ(z.name, "office");
    EXPECT_EQ(z.address, "10.0.0.2:7022");
    EXPECT_EQ(z.transport, "qubesair.SSHProxy");
    ASSERT_EQ(z.qubes.size(), 2u);
    EXPECT_EQ(z.qubes[1].name, "vault");
    EXPECT_EQ(z.qubes[1].label, "black");
}

TEST(AirZone, FormatReadsBack) {
    Zone z = parse_zone(kGood);
    Zone again = parse_zone(format_zone(z));
    EXPECT_EQ(again.name, z.name);
    EXPECT_EQ(again.address, z.address);
    EXPECT_EQ(again.transport, z.transport);
    ASSERT_EQ(again.qubes.size(), z.qubes.size());
    EXPECT_EQ(again.qubes[0].name, "work");
}

TEST(AirZone, RefusalsNameWhatIsWrong) {
    EXPECT_EQ(refusal("not json"), "zone file: not valid JSON");
    EXPECT_EQ(refusal("[]"), "zone file: not a JSON object");
    EXPECT_EQ(refusal(R"({"address": "a", "transport": "t", "qubes": []})"), "zone file: no \"zone\"");
    EXPECT_EQ(refusal(R"({"zone": 3, "address": "a", "transport": "t", "qubes": []})"),
              "zone file: \"zone\" is not a string");
    EXPECT_NE(refusal(R"({"zone": "Office", "address": "a", "transport": "t", "qubes": []})").find("zone: "),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a b", "transport": "t", "qubes": []})").find("address"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "x;rm", "qubes": []})").find("transport"),
              std::string::npos);
    EXPECT_EQ(refusal(R"({"zone": "o", "address": "a", "transport": "t"})"), "zone file: \"qubes\" is not a list");
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t", "qubes": [{"name": "../x", "label": "red"}]})")
                  .find("qubes[0]: name"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t",
                          "qubes": [{"name": "w", "label": "red"}, {"name": "w", "label": "red"}]})")
                  .find("listed twice"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t", "qubes": [{"name": "w"}]})")
                  .find("no \"label\""),
              std::string::npos);
}

const char* kKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHa1KLgjYGdIhAEJEJOBmtrZRofBk2tJgf8ZcOvkw38X aerie-air@office";
const char* kHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHa1KLgjYGdIhAEJEJOBmtrZRofBk2tJgf8ZcOvkw38Y";
const char* kCert =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBLDCB36ADAgECAhRj0BPUKZGjivyQAWvSfoh2wP8mpDAFBgMrZXAwDDEKMAgG\n"
    "A1UEAwwBeDAeFw0yNjEyMDMxMDQ0MTJaFw0yNjEyMDQxMDQ0MTJaMAwxCjAIBgNV\n"
    "BAMMAXgwKjAFBgMrZXADIQA=\n"
    "-----END CERTIFICATE-----\n";

std::string with(const std::string& key, const std::string& value) {
    nlohmann::json doc = nlohmann::json::parse(kGood);
    doc[key] = value;
    return doc.dump();
}

TEST(AirZone, CredentialsAreOptional) {
    Zone z = parse_zone(kGood);
    EXPECT_TRUE(z.tls_cert.empty() && z.ssh_key.empty() && z.ssh_host_key.empty());
    EXPECT_FALSE(z.has_credentials());
    EXPECT_EQ(format_zone(z).find("ssh_key"), std::string::npos);  // as zone files were before them
    EXPECT_TRUE(parse_zone(with("ssh_key", "")).ssh_key.empty());
}

TEST(AirZone, CredentialsReadBack) {
    nlohmann::json doc = nlohmann::json::parse(kGood);
    doc["tls_cert"] = kCert;
    doc["ssh_key"] = kKey;
    doc["ssh_host_key"] = kHostKey;
    Zone z = parse_zone(doc.dump());
    EXPECT_TRUE(z.has_credentials());
    EXPECT_EQ(z.tls_cert, kCert);
    EXPECT_EQ(z.ssh_key, kKey);
    EXPECT_EQ(z.ssh_host_key, kHostKey);
    Zone again = parse_zone(format_zone(z));
    EXPECT_EQ(again.tls_cert, kCert);
    EXPECT_EQ(again.ssh_key, kKey);
    EXPECT_EQ(again.ssh_host_key, kHostKey);
}

TEST(AirZone, CredentialRefusals) {
    std::string key(kKey), cert(kCert);
    EXPECT_EQ(refusal(with("ssh_key", key + "\ncommand=\"sh\" " + key)).rfind("zone file: ssh_key: ", 0), 0u);
    std::vector<std::string> bad_keys = {
        key + " two words", key + " ", "ssh-rsa" + key.substr(11), key.substr(0, 50), key.substr(0, 79) + "!",
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQDn3JjDMrSj9XhgRJw0dDR8x8H1AAAAAAAAAAAAAAAAAA",
        key.substr(0, 92) + "\"x\""};
    for (const auto& bad : bad_keys)
        EXPECT_NE(refusal(with("ssh_host_key", bad)).find("ssh_host_key: not one line"), std::string::npos) << bad;
    EXPECT_EQ(refusal(R"({"zone": "o", "address": "a", "transport": "t", "qubes": [], "ssh_key": 1})"),
              "zone file: \"ssh_key\" is not a string");
    std::vector<std::string> bad_certs = {
        cert.substr(0, cert.size() - 1), cert + cert, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\n" + cert.substr(28), cert.substr(0, 40) + "*" + cert.substr(41),
        cert.substr(0, 100) + "=" + cert.substr(100), std::string(kCert).insert(28, std::string(9000, 'A'))};
    for (const auto& bad : bad_certs)
        EXPECT_NE(refusal(with("tls_cert", bad)).find("tls_cert: "), std::string::npos) << bad;
}

TEST(AirZone, RelayKeysMakeACertificateTheZoneTakes) {
    std::string key = aerie::air::new_ed25519_key_pem();
    EXPECT_EQ(key.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
    std::string cert = aerie::air::self_signed_cert_pem(key, "office", {"work", "vault"});
    EXPECT_EQ(aerie::air::invalid_tls_cert(cert), "");
    EXPECT_EQ(aerie::air::cert_qube_names(cert), (std::vector<std::string>{"work", "vault"}));
    EXPECT_NE(aerie::air::self_signed_cert_pem(key, "office", {"work", "vault"}), cert);  // a new serial
    EXPECT_TRUE(aerie::air::cert_qube_names(aerie::air::self_signed_cert_pem(key, "o", {})).empty());
    EXPECT_THROW(aerie::air::cert_qube_names(kCert), aerie::air::AirError);  // truncated: not a certificate
    EXPECT_THROW(aerie::air::self_signed_cert_pem("junk", "o", {}), aerie::air::AirError);
}

}  // namespace
