package dps

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestFileName: the golden name of each programme, in GMT and BST and on both sides of both clock changes.
func TestFileName(t *testing.T) {
	tests := []struct {
		programme string
		at        time.Time
		want      string
	}{
		{"HPV", time.Date(2026, 11, 26, 11, 41, 25, 0, time.UTC), "HPV_Vaccinations_v5_V0V8L_20261126T11412500.csv"}, // the spec's example
		{"FLU", time.Date(2026, 7, 1, 1, 2, 3, 0, time.UTC), "FLU_Vaccinations_v5_V0V8L_20260701T02020301.csv"},
		{"MENACWY", time.Date(2026, 12, 31, 23, 59, 59, 999_000_000, time.UTC), "MENACWY_Vaccinations_v5_V0V8L_20261231T23595900.csv"},
		{"TD_IPV", time.Date(2026, 6, 30, 23, 30, 0, 0, time.UTC), "3IN1_Vaccinations_v5_V0V8L_20260701T00300001.csv"},
		{"HPV", time.Date(2026, 3, 29, 0, 59, 59, 0, time.UTC), "HPV_Vaccinations_v5_V0V8L_20260329T00595900.csv"},
		{"HPV", time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC), "HPV_Vaccinations_v5_V0V8L_20260329T02000001.csv"},
		{"HPV", time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), "HPV_Vaccinations_v5_V0V8L_20261025T01300001.csv"},
		{"HPV", time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), "HPV_Vaccinations_v5_V0V8L_20261025T01300000.csv"},
		{"FLU", time.Date(2026, 1, 1, 5, 0, 0, 0, time.FixedZone("X", 5*3600)), "FLU_Vaccinations_v5_V0V8L_20260101T00000000.csv"},
	}
	for _, tt := range tests {
		got, err := FileName(tt.programme, "V0V8L", tt.at)
		if err != nil || got != tt.want {
			t.Errorf("FileName(%s, %v) = %s, %v; want %s", tt.programme, tt.at, got, err, tt.want)
			continue
		}
		p, err := ParseFileName(got)
		if err != nil {
			t.Errorf("ParseFileName(%s): %v", got, err)
			continue
		}
		if p.Programme != tt.programme || p.SenderODS != "V0V8L" || !p.At.Equal(tt.at.Truncate(time.Second)) {
			t.Errorf("ParseFileName(%s) = %+v", got, p)
		}
	}
}

func TestFileNameRefuses(t *testing.T) {
	at := time.Date(2026, 11, 26, 11, 41, 25, 0, time.UTC)
	var unknown *UnknownProgrammeError
	if _, err := FileName("MMR", "V0V8L", at); !errors.As(err, &unknown) || unknown.Programme != "MMR" {
		t.Errorf("unknown programme: %v", err)
	}
	for _, ods := range []string{"", "AB", "ABCDEFGHIJK", "V0_V8L", "V0.V8L", "V0 V8L"} {
		if _, err := FileName("HPV", ods, at); err == nil {
			t.Errorf("ODS code %q accepted", ods)
		}
	}
	if got, _ := FileName("HPV", "v0v8l", at); !strings.Contains(got, "_V0V8L_") {
		t.Errorf("ODS code not upper-cased: %s", got)
	}
}

// TestVaccineTypesDistinct: two programmes never share a vaccine type, or their names could collide.
func TestVaccineTypesDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, p := range Programmes() {
		vt, _ := VaccineType(p)
		if other, dup := seen[vt]; dup {
			t.Fatalf("%s and %s share vaccine type %s", p, other, vt)
		}
		seen[vt] = p
	}
	if vt, _ := VaccineType("TD_IPV"); vt != "3IN1" {
		t.Fatalf("TD_IPV is %s, want 3IN1", vt)
	}
}

func TestParseFileNameRefuses(t *testing.T) {
	for _, name := range []string{
		"Vaccinations-HPV-2026-11-26.csv",                  // the old name
		"HPV_Vaccinations_v5_V0V8L_20261126T11412500.CSV",  // we write the extension lower-case
		"HPV_Vaccinations_v5_V0V8L_20261126T11412500.dat",  // not a CSV
		"HPV_Vaccinations_v5_V0V8L_20261126T11412500",      // no extension
		"MMR_Vaccinations_v5_V0V8L_20261126T11412500.csv",  // not a vaccine type we send
		"TD_IPV_Vaccinations_v5_V0V8L_20261126T114125.csv", // the programme code, not the vaccine type
		"HPV_Vaccination_v5_V0V8L_20261126T11412500.csv",   // fixed word
		"HPV_Vaccinations_v4_V0V8L_20261126T11412500.csv",  // version
		"HPV_Vaccinations_v5_V0_20261126T11412500.csv",     // ODS too short
		"HPV_Vaccinations_v5_v0v8l_20261126T11412500.csv",  // ODS lower case
		"HPV_Vaccinations_v5_V0V8L_20261126T114125.csv",    // no offset
		"HPV_Vaccinations_v5_V0V8L_20261126T11412501.csv",  // BST offset in November
		"HPV_Vaccinations_v5_V0V8L_20260701T11412500.csv",  // GMT offset in July
		"HPV_Vaccinations_v5_V0V8L_20261126T25412500.csv",  // hour 25
		"HPV_Vaccinations_v5_V0V8L_20261126T11412500_2.csv",
	} {
		if p, err := ParseFileName(name); err == nil {
			t.Errorf("ParseFileName(%s) accepted: %+v", name, p)
		}
	}
}
