package engine

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// FuzzValidateItems: ValidateItems accepts exactly the lists of min to
// MaxItemsPerCall items of 1 to MaxItemBytes bytes of UTF-8 without NUL, and
// refuses every other with invalid_items. Items arrive joined by "\n" (a
// separator ValidateItems does not care about).
func FuzzValidateItems(f *testing.F) {
	for _, seed := range []string{"a", "", "a\nb", "\x00", "\xff", "é", strings.Repeat("a", 256), strings.Repeat("a", 257),
		strings.Repeat("é", 128), strings.Repeat("é", 129), "\xed\xa0\x80", "a\n\nb", strings.Repeat("x\n", 1000) + "x"} {
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(0))
	}
	f.Fuzz(func(t *testing.T, joined string, min uint8) {
		items := strings.Split(joined, "\n")
		if joined == "" && min == 0 {
			items = nil
		}
		want := len(items) >= int(min) && len(items) <= MaxItemsPerCall
		for _, it := range items {
			if len(it) == 0 || len(it) > MaxItemBytes || !utf8.ValidString(it) || strings.IndexByte(it, 0) >= 0 {
				want = false
			}
		}
		err := ValidateItems("items", items, int(min))
		if (err == nil) != want {
			t.Fatalf("ValidateItems(%d items, min %d) = %v, want accepted=%v", len(items), min, err, want)
		}
		if err != nil && apperr.CodeOf(err) != apperr.InvalidItems {
			t.Fatalf("refusal with code %s", apperr.CodeOf(err))
		}
	})
}
