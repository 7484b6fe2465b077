package dps

import (
	"net/url"
	"time"
)

// The predicates below are shared by the writer (which refuses a record it
// could only write as an invalid row) and the checker, so that "the checker
// accepts what the writer writes" holds by construction, not by luck.

// ValidNHSNumber reports whether s is 10 digits with a valid mod-11 check
// digit (weights 10..2 over the first nine digits; 11 → 0; 10 is invalid).
func ValidNHSNumber(s string) bool {
	if len(s) != 10 {
		return false
	}
	sum := 0
	for i := 0; i < 10; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		if i < 9 {
			sum += int(c-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(s[9]-'0')
}

// validUUID reports whether s is a canonical UUID: lower-case only, or
// either case when upperOK (the writer lower-cases as it writes).
func validUUID(s string, upperOK bool) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if upperOK && c >= 'A' && c <= 'F' {
				continue
			}
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// ValidSNOMED reports whether s is a SNOMED CT concept id as the receiver tests one: 6 to 18 digits,
// no leading zero, a valid Verhoeff check digit, and the partition (the two digits before the check
// digit) of a concept, 00 or 10. A description or relationship id has the right shape but the wrong
// partition, and the receiver refuses it.
func ValidSNOMED(s string) bool {
	if len(s) < 6 || len(s) > 18 || s[0] == '0' || !allDigits(s) {
		return false
	}
	if p := s[len(s)-3 : len(s)-1]; p != "00" && p != "10" {
		return false
	}
	return verhoeffValid(s)
}

// The Verhoeff scheme's tables: multiplication in the dihedral group D5 and the position permutation.
var (
	verhoeffD = [10][10]byte{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5}, {2, 3, 4, 0, 1, 7, 8, 9, 5, 6},
		{3, 4, 0, 1, 2, 8, 9, 5, 6, 7}, {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
		{6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3}, {8, 7, 6, 5, 9, 3, 2, 1, 0, 4},
		{9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
	}
	verhoeffP = [8][10]byte{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4}, {5, 8, 0, 3, 7, 9, 6, 1, 4, 2},
		{8, 9, 1, 6, 0, 4, 3, 5, 2, 7}, {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
		{2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8},
	}
)

// verhoeffValid reports whether the digits of s, check digit last, pass the Verhoeff check.
func verhoeffValid(s string) bool {
	var c byte
	for i := 0; i < len(s); i++ {
		c = verhoeffD[c][verhoeffP[i%8][s[len(s)-1-i]-'0']]
	}
	return c == 0
}

// validDecimal reports whether s is a non-negative decimal as Postgres
// prints numeric: digits, optionally a point and more digits.
func validDecimal(s string) bool {
	if s == "" {
		return false
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return false
	}
	if i == len(s) {
		return true
	}
	if s[i] != '.' || i == len(s)-1 {
		return false
	}
	return allDigits(s[i+1:])
}

// validURN reports whether s is a school URN: digits only.
func validURN(s string) bool { return len(s) >= 1 && len(s) <= 8 && allDigits(s) }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validUniqueIDURI reports whether s is an absolute https URI.
func validUniqueIDURI(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == '"' || s[i] == '|' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// writableYear reports whether a date in year y prints as exactly four digits.
func writableYear(y int) bool { return y >= 1 && y <= 9999 }

// validGender reports whether g is a PERSON_GENDER_CODE.
func validGender(g int) bool { return g == 0 || g == 1 || g == 2 || g == 9 }

// parseDate parses YYYYMMDD strictly (a real calendar date, year ≥ 1).
func parseDate(s string) (time.Time, bool) {
	if len(s) != 8 || !allDigits(s) {
		return time.Time{}, false
	}
	y, m, d := atoi(s[0:4]), atoi(s[4:6]), atoi(s[6:8])
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	if y < 1 || t.Year() != y || int(t.Month()) != m || t.Day() != d {
		return time.Time{}, false
	}
	return t, true
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}
