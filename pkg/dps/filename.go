package dps

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// vaccineTypes maps each programme we export to the receiver's vaccine type, the first part of a file
// name. The receiver knows a programme only by this type (its supplier permissions and its target
// diseases hang off it), so a programme missing here cannot be sent at all.
var vaccineTypes = map[string]string{
	"HPV":     "HPV",
	"FLU":     "FLU",
	"MENACWY": "MENACWY",
	"TD_IPV":  "3IN1", // tetanus, diphtheria and polio: the receiver's "3-in-1"
}

// VaccineType returns the receiver's vaccine type of a programme code, and whether there is one.
func VaccineType(programme string) (string, bool) {
	v, ok := vaccineTypes[programme]
	return v, ok
}

// Programmes returns the programme codes that have a vaccine type, sorted.
func Programmes() []string {
	out := make([]string, 0, len(vaccineTypes))
	for p := range vaccineTypes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// UnknownProgrammeError is returned for a programme with no vaccine type: nothing is built or sent for it.
type UnknownProgrammeError struct{ Programme string }

func (e *UnknownProgrammeError) Error() string {
	return fmt.Sprintf("dps: programme %q has no DPS vaccine type (known: %s)", e.Programme, strings.Join(Programmes(), ", "))
}

// ValidODSCode reports whether s can stand as the sender's ODS code in a file name: 3 to 10 letters and
// digits (an underscore or dot would split the name where the receiver splits it).
func ValidODSCode(s string) bool {
	if len(s) < 3 || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// FileName is the name of a programme's file sent by the organisation senderODS at the instant at:
// {VACCINE}_Vaccinations_v5_{ODS}_{YYYYMMDDTHHMMSSZZ}.csv, the time in UK local time with its offset
// (00 GMT, 01 BST), to the second. Names are unique only if callers never use one second twice for a
// programme (the export engine sees to that).
func FileName(programme, senderODS string, at time.Time) (string, error) {
	vt, ok := VaccineType(programme)
	if !ok {
		return "", &UnknownProgrammeError{Programme: programme}
	}
	if !ValidODSCode(senderODS) {
		return "", errors.New("dps: the sender's ODS code must be 3 to 10 letters and digits")
	}
	local := at.In(London())
	suffix := offsetSuffix(local)
	if suffix == "" || !writableYear(local.Year()) {
		return "", fmt.Errorf("dps: %s cannot be written as a UK time with a 00 or 01 offset", at.UTC().Format(time.RFC3339))
	}
	return vt + "_Vaccinations_v5_" + strings.ToUpper(senderODS) + "_" + local.Format("20060102T150405") + suffix + ".csv", nil
}

// FileNameParts are the parts of a file name that ParseFileName accepted.
type FileNameParts struct {
	VaccineType string
	Programme   string // our programme of that vaccine type
	SenderODS   string
	At          time.Time // the instant of the timestamp
}

// ParseFileName checks a file name as the receiver does before it opens the file, and as our contract
// adds: five "_"-separated parts and the extension csv; a vaccine type we send; "Vaccinations" and "v5"
// (the receiver compares them upper-cased; we write them exactly so); an ODS code of 3 to 10 letters and
// digits; and a timestamp YYYYMMDDTHHMMSS plus 00 or 01, the offset in force in the UK then.
func ParseFileName(name string) (FileNameParts, error) {
	var p FileNameParts
	bad := func(reason string) (FileNameParts, error) {
		return p, fmt.Errorf("file name %q: %s (want {VACCINE}_Vaccinations_v5_{ODS}_{YYYYMMDDTHHMMSSZZ}.csv)", name, reason)
	}
	base, ok := strings.CutSuffix(name, ".csv")
	if !ok {
		return bad("extension is not .csv")
	}
	parts := strings.Split(base, "_")
	if len(parts) != 5 || strings.Contains(base, ".") {
		return bad("not five parts separated by \"_\"")
	}
	p.VaccineType = parts[0]
	for prog, vt := range vaccineTypes {
		if vt == p.VaccineType {
			p.Programme = prog
		}
	}
	switch {
	case p.Programme == "":
		return bad("unknown vaccine type")
	case parts[1] != "Vaccinations":
		return bad("second part is not Vaccinations")
	case parts[2] != "v5":
		return bad("version is not v5")
	case !ValidODSCode(parts[3]) || parts[3] != strings.ToUpper(parts[3]):
		return bad("the ODS code is not 3 to 10 upper-case letters and digits")
	}
	p.SenderODS = parts[3]
	at, reason := checkUKTime(parts[4])
	if reason != "" {
		return bad("timestamp " + reason)
	}
	p.At = at
	return p, nil
}
