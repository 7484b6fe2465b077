package demodata

import "testing"

func TestValidNHSNumber(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"9992686766", true},  // the DPS spec's example row
		{"9434765919", true},  // a check digit of 9
		{"9990000018", true},  // 999 000 001: check digit 8
		{"9992686767", false}, // wrong check digit
		{"999268676", false},  // nine digits
		{"99926867660", false},
		{"999268676a", false},
		{"", false},
		{"999 268 6766", false}, // spaces are a display form, not the value
	}
	for _, tt := range tests {
		if got := ValidNHSNumber(tt.in); got != tt.want {
			t.Errorf("ValidNHSNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestTestNHSNumbersAreDistinctAndValid(t *testing.T) {
	if stemStride*stemInverse%stemCount != 1 {
		t.Fatalf("stemInverse is not the inverse of stemStride mod %d", stemCount)
	}
	seen := map[string]uint64{}
	invalid := 0
	for j := range uint64(stemCount) {
		n, ok := TestNHSNumber(j)
		if !ok {
			invalid++
			continue
		}
		if !ValidNHSNumber(n) || n[:3] != "999" {
			t.Fatalf("TestNHSNumber(%d) = %s: not a valid test-range number", j, n)
		}
		if prev, dup := seen[n]; dup {
			t.Fatalf("TestNHSNumber(%d) = TestNHSNumber(%d) = %s", j, prev, n)
		}
		seen[n] = j
		// The seed recovers the position from the stem; it must round-trip.
		var stem uint64
		for _, c := range n[3:9] {
			stem = stem*10 + uint64(c-'0')
		}
		if back := (stem + stemCount - stemOffset) * stemInverse % stemCount; back != j {
			t.Fatalf("position of %s = %d, want %d", n, back, j)
		}
	}
	// About one stem in eleven has remainder 1 and so no valid check digit.
	if invalid < stemCount/12 || invalid > stemCount/10 {
		t.Errorf("%d invalid stems of %d", invalid, stemCount)
	}
	g := NewNHSNumbers(0)
	a, b := g.Next(), g.Next()
	if a == b || !ValidNHSNumber(a) || !ValidNHSNumber(b) {
		t.Errorf("Next gave %s then %s", a, b)
	}
}
