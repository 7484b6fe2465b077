package demodata

// ValidNHSNumber reports whether s is ten digits whose last is the NHS modulus 11 check
// digit of the first nine. It says nothing about whether the number was ever issued.
func ValidNHSNumber(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := range 10 {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	check, ok := nhsCheckDigit(s[:9])
	return ok && int(s[9]-'0') == check
}

// nhsCheckDigit is the modulus 11 check digit of nine digits: weights 10 down to 2, and
// 11 minus the remainder, where 11 becomes 0 and 10 means no valid number exists.
func nhsCheckDigit(nine string) (digit int, ok bool) {
	sum := 0
	for i := range 9 {
		sum += int(nine[i]-'0') * (10 - i)
	}
	check := 11 - sum%11
	switch check {
	case 11:
		return 0, true
	case 10:
		return 0, false
	}
	return check, true
}

// The test range 999 000 000 0 – 999 999 999 9 has a million nine-digit stems. Test
// numbers are handed out in a scrambled but fixed order, stem(j) = (a·j + b) mod 10⁶,
// so consecutive patients do not get consecutive numbers, and the position j of any
// stem can be recovered (with aInverse) to carry on where an earlier seed stopped.
const (
	stemCount   = 1_000_000
	stemStride  = 387_563 // coprime with 10⁶: the map is a permutation
	stemOffset  = 271_828
	stemInverse = 746_627 // stemStride · stemInverse ≡ 1 (mod 10⁶); checked in a test
)

// TestNHSNumber returns the test-range NHS number at position j of the fixed scrambled
// order, and false when that stem has no valid check digit (about one in eleven). Every
// j in [0, 10⁶) gives a different number; larger j wrap around.
func TestNHSNumber(j uint64) (string, bool) {
	stem := (stemStride*(j%stemCount) + stemOffset) % stemCount
	var b [10]byte
	b[0], b[1], b[2] = '9', '9', '9'
	for i := 8; i >= 3; i-- {
		b[i] = byte('0' + stem%10)
		stem /= 10
	}
	check, ok := nhsCheckDigit(string(b[:9]))
	if !ok {
		return "", false
	}
	b[9] = byte('0' + check)
	return string(b[:]), true
}

// NHSNumbers hands out distinct valid test-range NHS numbers, starting at a position
// of the fixed order.
type NHSNumbers struct {
	next uint64
}

// NewNHSNumbers returns a generator starting at position start.
func NewNHSNumbers(start uint64) *NHSNumbers { return &NHSNumbers{next: start} }

// Next returns the next valid number; numbers repeat only after the million stems of the
// test range are used up.
func (g *NHSNumbers) Next() string {
	for {
		n, ok := TestNHSNumber(g.next)
		g.next++
		if ok {
			return n
		}
	}
}

// Position is where the next call to Next starts looking.
func (g *NHSNumbers) Position() uint64 { return g.next }
