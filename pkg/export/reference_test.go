package export

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// TestReferenceCompletesRows: the reference fills a row's columns as exportRowsFrom's joins would.
func TestReferenceCompletesRows(t *testing.T) {
	expiry := time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC)
	ref := &reference{
		teams:       map[int64]string{1: "RT5"},
		locations:   map[int64]location{10: {school: true, urn: "100001"}, 11: {}},
		vaccines:    map[int64]vaccine{20: {procedureCode: "p", procedureTerm: "pt", productCode: "v", productTerm: "vt", manufacturer: "m", doseVolume: "0.5"}},
		batches:     map[int64]batch{30: {name: "AB1234", expiry: expiry}},
		vaccinators: map[int64]string{40: "Ann Nurse"},
	}
	id := func(v int64) pgtype.Int8 { return pgtype.Int8{Int64: v, Valid: true} }
	tests := []struct {
		name    string
		refs    refs
		want    dps.Record
		wantErr string
	}{
		{"everything, at a school", refs{team: 1, location: id(10), vaccine: id(20), batch: id(30), vaccinator: id(40)},
			dps.Record{SiteODSCode: "RT5", SchoolURN: "100001", ProcedureCode: "p", ProcedureTerm: "pt", ProductCode: "v",
				ProductTerm: "vt", Manufacturer: "m", DoseAmount: "0.5", BatchName: "AB1234", BatchExpiry: expiry, VaccinatorFullName: "Ann Nurse"}, ""},
		{"a clinic, the record's own dose", refs{team: 1, location: id(11), vaccine: id(20), doseVolume: pgtype.Text{String: "0.25", Valid: true}},
			dps.Record{SiteODSCode: "RT5", LocationODSCode: "RT5", ProcedureCode: "p", ProcedureTerm: "pt", ProductCode: "v",
				ProductTerm: "vt", Manufacturer: "m", DoseAmount: "0.25"}, ""},
		{"nothing but the team", refs{team: 1}, dps.Record{SiteODSCode: "RT5", LocationODSCode: "RT5"}, ""},
		{"unknown team", refs{team: 2}, dps.Record{}, "team 2"},
		{"unknown location", refs{team: 1, location: id(12)}, dps.Record{}, "location 12"},
		{"unknown vaccine", refs{team: 1, vaccine: id(21)}, dps.Record{}, "vaccine 21"},
		{"unknown batch", refs{team: 1, batch: id(31)}, dps.Record{}, "batch 31"},
		{"unknown vaccinator", refs{team: 1, vaccinator: id(41)}, dps.Record{}, "vaccinator 41"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Left over from the row before: complete must overwrite every column it owns.
			rec := dps.Record{UUID: "u", SchoolURN: "stale", VaccinatorFullName: "stale", BatchName: "stale", DoseAmount: "9"}
			err := ref.complete(&rec, tt.refs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.UUID = "u"
			if rec != tt.want {
				t.Errorf("got  %+v\nwant %+v", rec, tt.want)
			}
		})
	}
}
