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

// validSNOMED reports whether s looks like a SNOMED CT concept id: 6 to 18
// digits, no leading zero.
func validSNOMED(s string) bool {
	return len(s) >= 6 && len(s) <= 18 && s[0] != '0' && allDigits(s)
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

// validDateTime checks YYYYMMDDTHHMMSS00 (the trailing "00" is fixed).
func validDateTime(s string) bool {
	if len(s) != 17 || s[8] != 'T' || s[15:] != "00" {
		return false
	}
	if _, ok := parseDate(s[:8]); !ok {
		return false
	}
	clock := s[9:15]
	if !allDigits(clock) {
		return false
	}
	return atoi(clock[0:2]) < 24 && atoi(clock[2:4]) < 60 && atoi(clock[4:6]) < 60
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}
