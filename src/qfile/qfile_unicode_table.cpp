// Build-time generator of display_ranges.inc: the non-ASCII code points a
// qfile name may hold without allow-all-names, as ranges "{first, last},".
// The rule is Qubes' (so both sides accept the same names): a code point
// that may be assigned a character, of a letter, number, punctuation, math or
// currency category, of neutral or left-to-right direction, of a script in
// recommended use among Latin, Greek, Cyrillic, the Han, Japanese and Korean
// scripts, Braille, Common and Inherited. Marks, spaces, format and control
// characters, private use, other symbols and everything right-to-left or
// needing complex shaping are out. The ranges come from the Unicode data of
// the ICU the build uses.
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/utf.h>

#include <cstdint>
#include <cstdio>

namespace {

bool allowed_category(int category) {
    switch (category) {
        case U_UPPERCASE_LETTER:
        case U_LOWERCASE_LETTER:
        case U_TITLECASE_LETTER:
        case U_MODIFIER_LETTER:
        case U_OTHER_LETTER:
        case U_DECIMAL_DIGIT_NUMBER:
        case U_LETTER_NUMBER:
        case U_OTHER_NUMBER:
        case U_DASH_PUNCTUATION:
        case U_START_PUNCTUATION:
        case U_END_PUNCTUATION:
        case U_CONNECTOR_PUNCTUATION:
        case U_OTHER_PUNCTUATION:
        case U_INITIAL_PUNCTUATION:
        case U_FINAL_PUNCTUATION:
        case U_MATH_SYMBOL:
        case U_CURRENCY_SYMBOL:
            return true;
        default:
            return false;
    }
}

bool allowed_direction(int direction) {
    switch (direction) {
        case U_WHITE_SPACE_NEUTRAL:
        case U_OTHER_NEUTRAL:
        case U_EUROPEAN_NUMBER_TERMINATOR:
        case U_EUROPEAN_NUMBER_SEPARATOR:
        case U_COMMON_NUMBER_SEPARATOR:
        case U_EUROPEAN_NUMBER:
        case U_LEFT_TO_RIGHT:
            return true;
        default:
            return false;
    }
}

bool allowed_script(UScriptCode script) {
    switch (script) {
        case USCRIPT_INHERITED:
        case USCRIPT_COMMON:
        case USCRIPT_LATIN:
        case USCRIPT_GREEK:
        case USCRIPT_CYRILLIC:
        case USCRIPT_BRAILLE:
        case USCRIPT_HAN:
        case USCRIPT_SIMPLIFIED_HAN:
        case USCRIPT_TRADITIONAL_HAN:
        case USCRIPT_HAN_WITH_BOPOMOFO:
        case USCRIPT_BOPOMOFO:
        case USCRIPT_HIRAGANA:
        case USCRIPT_KATAKANA:
        case USCRIPT_KATAKANA_OR_HIRAGANA:
        case USCRIPT_JAPANESE:
        case USCRIPT_HANGUL:
        case USCRIPT_JAMO:
        case USCRIPT_KOREAN:
            return true;
        default:
            return false;
    }
}

bool allowed(std::uint32_t cp) {
    if (!U_IS_UNICODE_CHAR(cp) || cp < 0x20) return false;
    if (cp < 0x7F) return true;
    if (!allowed_category(u_charType(static_cast<UChar32>(cp)))) return false;
    if (!allowed_direction(u_charDirection(static_cast<UChar32>(cp)))) return false;
    UErrorCode status = U_ZERO_ERROR;
    UScriptCode script = uscript_getScript(static_cast<UChar32>(cp), &status);
    if (U_FAILURE(status)) return false;
    UScriptUsage usage = uscript_getUsage(script);
    if (usage != USCRIPT_USAGE_UNKNOWN && usage != USCRIPT_USAGE_RECOMMENDED) return false;
    return allowed_script(script);
}

}  // namespace

int main() {
    bool in_range = false;
    std::uint32_t first = 0;
    for (std::uint32_t cp = 0x7F; cp <= 0x110000; ++cp) {
        bool ok = cp < 0x110000 && allowed(cp);
        if (ok && !in_range) {
            first = cp;
            in_range = true;
        } else if (!ok && in_range) {
            std::printf("{0x%06X, 0x%06X},\n", first, cp - 1);
            in_range = false;
        }
    }
    return std::fflush(stdout) == 0 ? 0 : 1;
}
