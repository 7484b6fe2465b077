package dps

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Rule names one rule a row must keep. It is the reason label of the producer's refused-rows metric and
// what `producer refused` reports, so the set is small and stable: one rule per concept, with the exact
// field and wording in the Refusal.
//
// The rules are ours, written from what NHS England's batch pipeline (NHSDigital/immunisation-fhir-api)
// does with a row: it turns each row into a FHIR Immunization and runs its pre- and post-validators on a
// create or update; a delete only looks the record up by UNIQUE_ID and UNIQUE_ID_URI. Where the contract
// (../shared/spec/dps-csv.md) is stricter than the receiver, the contract wins.
type Rule string

// The rules. "receiver" marks those the receiver enforces itself; the others are our contract.
const (
	RuleFormat        Rule = "format"               // line shape, encoding, fixed values of the contract
	RuleUniqueID      Rule = "unique_id"            // receiver: UNIQUE_ID and UNIQUE_ID_URI present; ours: a lower-case UUID and an https URI
	RuleActionFlag    Rule = "action_flag"          // receiver: new, update or delete
	RuleRecordedDate  Rule = "recorded_date"        // receiver: mandatory, a real date, not in the future
	RuleNHSNumber     Rule = "nhs_number"           // receiver: 10 digits, mod-11 check digit; ours: always present
	RuleForename      Rule = "forename"             // receiver: mandatory, at most 180 characters
	RuleSurname       Rule = "surname"              // receiver: mandatory, at most 35 characters
	RuleDateOfBirth   Rule = "date_of_birth"        // receiver: mandatory, a real date, not in the future
	RuleGender        Rule = "gender"               // receiver: mandatory, one of 0, 1, 2, 9
	RulePostcode      Rule = "postcode"             // receiver: mandatory, not blank
	RuleDateAndTime   Rule = "date_and_time"        // receiver: mandatory, offset 00 or 01, not in the future; ours: the offset in force in the UK
	RuleSiteCode      Rule = "site_code"            // receiver: SITE_CODE and its URI mandatory
	RulePrimarySource Rule = "primary_source"       // receiver: mandatory boolean
	RuleProcedure     Rule = "procedure_code"       // receiver: mandatory SNOMED concept id (Verhoeff check digit); ours: its term too
	RuleDoseSequence  Rule = "dose_sequence"        // receiver: when given, an integer from 1 to 9
	RuleProduct       Rule = "product_code"         // receiver: a SNOMED concept id when given; ours: always given, with its term
	RuleExpiryDate    Rule = "expiry_date"          // receiver: when given, a real date
	RuleBodySite      Rule = "site_of_vaccination"  // ours: a known body site, code and term as a pair
	RuleRoute         Rule = "route_of_vaccination" // ours: a known route, code and term as a pair
	RuleSiteRoute     Rule = "site_route_pair"      // ours: the nose with the nasal route only, and the nasal route nowhere else
	RuleDoseAmount    Rule = "dose_amount"          // receiver: when given, an integer or decimal; ours: more than zero
	RuleIndication    Rule = "indication_code"      // ours: always empty
	RuleLocation      Rule = "location_code"        // receiver: LOCATION_CODE and its URI mandatory; ours: a school URN is digits
)

// Refusal says why a row would be refused: the rule, the DPS field, and what is wrong, in words that
// never quote the value (it may be patient data).
type Refusal struct {
	Rule   Rule
	Field  string
	Reason string
}

// ok reports whether no rule was broken.
func (r Refusal) ok() bool { return r.Rule == "" }

// Limits the receiver puts on names.
const (
	maxGivenNameLen  = 180
	maxFamilyNameLen = 35
	maxDoseSequence  = 9
)

// rowRules applies the row rules to one line after another. It remembers the last UNIQUE_ID_URI it
// accepted: every row of a file carries the same one, and parsing a URL per row would be most of the cost.
// It also remembers today's date, which changes once a day, not once a row.
type rowRules struct {
	knownURI string
	day      int64  // the UTC day (days since 1970-01-01) of today
	today    string // YYYYMMDD of day; "" before the first row
}

// todayUTC is YYYYMMDD of now's date in UTC.
func (rr *rowRules) todayUTC(now time.Time) string {
	// Unix time counts 86,400 seconds a day, so its floored quotient is the UTC day.
	sec := now.Unix()
	day := sec / 86400
	if sec%86400 < 0 {
		day--
	}
	if day != rr.day || rr.today == "" {
		var b [8]byte
		rr.day, rr.today = day, string(appendYMD(b[:0], now.UTC()))
	}
	return rr.today
}

// check applies the row rules to the 34 values of one data line. now is the instant "in the future" is
// measured from; the receiver compares dates with its own (UTC) calendar date, so a date counts as in the
// future once it is after today in UTC.
func (rr *rowRules) check(f *[NumFields]string, now time.Time) Refusal {
	refuse := func(i int, rule Rule, reason string) Refusal {
		return Refusal{Rule: rule, Field: Header[i], Reason: reason}
	}
	today := rr.todayUTC(now) // YYYYMMDD compares as text

	// Every row: the contract's fixed values, identity and action.
	switch {
	case f[8] != ODSCodeURI:
		return refuse(8, RuleFormat, "not "+ODSCodeURI)
	case f[15] != primarySource:
		return refuse(15, RulePrimarySource, "not TRUE")
	case f[29] != DoseUnitCode:
		return refuse(29, RuleFormat, "not "+DoseUnitCode)
	case f[30] != DoseUnitTerm:
		return refuse(30, RuleFormat, "not "+DoseUnitTerm)
	case f[33] != ODSCodeURI && f[33] != SchoolURNURI:
		return refuse(33, RuleFormat, "not an ODS or school URN URI")
	case !validUUID(f[9], false):
		return refuse(9, RuleUniqueID, "not a lower-case UUID")
	case f[10] == "" || f[10] != rr.knownURI && !validUniqueIDURI(f[10]):
		return refuse(10, RuleUniqueID, "not an absolute https URI")
	case f[11] != ActionNew && f[11] != ActionUpdate && f[11] != ActionDelete:
		return refuse(11, RuleActionFlag, "not new, update or delete")
	}
	if f[10] != rr.knownURI {
		rr.knownURI = strings.Clone(f[10]) // f aliases a buffer the next line overwrites
	}
	if r := checkDate(f[14], today, false); r != "" {
		return refuse(14, RuleRecordedDate, r)
	}
	if f[11] == ActionDelete {
		// The receiver deletes by UNIQUE_ID and UNIQUE_ID_URI alone and reads nothing else of the row.
		return Refusal{}
	}

	// A create or an update: what the receiver's validators demand of the Immunization it builds.
	switch {
	case !ValidNHSNumber(f[0]):
		return refuse(0, RuleNHSNumber, "not 10 digits with a valid mod-11 check digit")
	case blank(f[1]):
		return refuse(1, RuleForename, "empty")
	case utf8.RuneCountInString(f[1]) > maxGivenNameLen:
		return refuse(1, RuleForename, "longer than 180 characters")
	case blank(f[2]):
		return refuse(2, RuleSurname, "empty")
	case utf8.RuneCountInString(f[2]) > maxFamilyNameLen:
		return refuse(2, RuleSurname, "longer than 35 characters")
	}
	if r := checkDate(f[3], today, false); r != "" {
		return refuse(3, RuleDateOfBirth, r)
	}
	switch {
	case f[4] != "0" && f[4] != "1" && f[4] != "2" && f[4] != "9":
		return refuse(4, RuleGender, "not 0, 1, 2 or 9")
	case blank(f[5]):
		return refuse(5, RulePostcode, "empty (write "+UnknownPostcode+" when none is held)")
	}
	if r := checkDateTime(f[6], now); r != "" {
		return refuse(6, RuleDateAndTime, r)
	}
	switch {
	case blank(f[7]):
		return refuse(7, RuleSiteCode, "empty")
	case !ValidSNOMED(f[16]):
		return refuse(16, RuleProcedure, "not a SNOMED CT concept id")
	case blank(f[17]):
		return refuse(17, RuleProcedure, "empty")
	case f[18] != "" && !validDoseSequence(f[18]):
		return refuse(18, RuleDoseSequence, "not an integer from 1 to 9")
	case !ValidSNOMED(f[19]):
		return refuse(19, RuleProduct, "not a SNOMED CT concept id")
	case blank(f[20]):
		return refuse(20, RuleProduct, "empty")
	}
	if f[23] != "" {
		if r := checkDate(f[23], "", true); r != "" {
			return refuse(23, RuleExpiryDate, r)
		}
	}
	switch {
	case f[24] != "" && siteTerms[f[24]] == "":
		return refuse(24, RuleBodySite, "unknown body site code")
	case f[25] != siteTerms[f[24]]:
		return refuse(25, RuleBodySite, "does not match SITE_OF_VACCINATION_CODE")
	case f[26] != "" && routeTerms[f[26]] == "":
		return refuse(26, RuleRoute, "unknown route code")
	case f[27] != routeTerms[f[26]]:
		return refuse(27, RuleRoute, "does not match ROUTE_OF_VACCINATION_CODE")
	case f[24] != "" && f[26] != "" && (f[24] == noseSiteCode) != (f[26] == nasalRouteCode):
		return refuse(26, RuleSiteRoute, "the nasal route goes with the nose, and only with it")
	case f[28] != "" && !validDecimal(f[28]):
		return refuse(28, RuleDoseAmount, "not a decimal")
	case f[28] != "" && strings.Trim(f[28], "0.") == "":
		return refuse(28, RuleDoseAmount, "zero")
	case f[31] != "":
		return refuse(31, RuleIndication, "not empty")
	case blank(f[32]):
		return refuse(32, RuleLocation, "empty")
	case f[33] == SchoolURNURI && !validURN(f[32]):
		return refuse(32, RuleLocation, "school URN is not 1 to 8 digits")
	}
	return Refusal{}
}

// blank reports whether s is empty or only white space: the receiver refuses both as "must be a non-empty
// string".
func blank(s string) bool { return strings.TrimSpace(s) == "" }

// checkDate checks a YYYYMMDD date; unless futureOK, a date after today (YYYYMMDD) is refused. It returns
// what is wrong, or "".
func checkDate(s, today string, futureOK bool) string {
	if _, ok := parseDate(s); !ok {
		return "not a YYYYMMDD date"
	}
	if !futureOK && s > today {
		return "in the future"
	}
	return ""
}

// checkDateTime checks DATE_AND_TIME: a UK local time with its offset (see checkUKTime), not after now.
func checkDateTime(s string, now time.Time) string {
	at, reason := checkUKTime(s)
	if reason == "" && at.After(now) {
		return "in the future"
	}
	return reason
}

// checkUKTime checks YYYYMMDDTHHMMSS then the UK offset in hours, 00 (GMT) or 01 (BST), which must be the
// offset in force in Europe/London at that local time, so that the receiver, which reads 00 as UTC and 01
// as UTC+1, reads the instant we mean. It returns the instant, or what is wrong.
func checkUKTime(s string) (time.Time, string) {
	at, ok := parseDateTime(s)
	if !ok {
		return at, "not YYYYMMDDTHHMMSS followed by 00 (GMT) or 01 (BST)"
	}
	local := at.In(London())
	var wall [15]byte
	if _, off := local.Zone(); off != offsetSeconds(s[15:]) || string(appendWallClock(wall[:0], local)) != s[:15] {
		return at, "offset is not the one in force in the UK at that time"
	}
	return at, ""
}

// parseDateTime reads YYYYMMDDTHHMMSSZZ, ZZ being 00 or 01 hours east of UTC.
func parseDateTime(s string) (time.Time, bool) {
	if len(s) != 17 || s[8] != 'T' || (s[15:] != "00" && s[15:] != "01") {
		return time.Time{}, false
	}
	d, ok := parseDate(s[:8])
	clock := s[9:15]
	if !ok || !allDigits(clock) {
		return time.Time{}, false
	}
	hh, mm, ss := atoi(clock[0:2]), atoi(clock[2:4]), atoi(clock[4:6])
	if hh > 23 || mm > 59 || ss > 59 {
		return time.Time{}, false
	}
	zone := zoneGMT
	if s[15:] == "01" {
		zone = zoneBST
	}
	return time.Date(d.Year(), d.Month(), d.Day(), hh, mm, ss, 0, zone), true
}

// The two offsets of DATE_AND_TIME, made once: time.FixedZone allocates.
var zoneGMT, zoneBST = time.FixedZone("+00:00", 0), time.FixedZone("+01:00", 3600)

func offsetSeconds(suffix string) int {
	if suffix == "01" {
		return 3600
	}
	return 0
}

// offsetSuffix is the ZZ of a time already in Europe/London, or "" when its offset is neither GMT nor BST
// (British Double Summer Time in the 1940s, which the receiver cannot express).
func offsetSuffix(t time.Time) string {
	switch _, off := t.Zone(); off {
	case 0:
		return "00"
	case 3600:
		return "01"
	}
	return ""
}

func validDoseSequence(s string) bool {
	return len(s) == 1 && s[0] >= '1' && s[0] <= '0'+maxDoseSequence
}

// Rules returns every rule, for metrics that start each series at zero and for documentation.
func Rules() []Rule {
	return []Rule{RuleFormat, RuleUniqueID, RuleActionFlag, RuleRecordedDate, RuleNHSNumber, RuleForename,
		RuleSurname, RuleDateOfBirth, RuleGender, RulePostcode, RuleDateAndTime, RuleSiteCode, RulePrimarySource,
		RuleProcedure, RuleDoseSequence, RuleProduct, RuleExpiryDate, RuleBodySite, RuleRoute, RuleSiteRoute,
		RuleDoseAmount, RuleIndication, RuleLocation}
}
