package export

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// validSNOMEDWith returns a SNOMED concept id (partition 10) starting with prefix whose Verhoeff check
// digit is right, or, when broken, the same id with the wrong check digit.
func validSNOMEDWith(t *testing.T, prefix string, broken bool) string {
	t.Helper()
	for d := '0'; d <= '9'; d++ {
		code := prefix + "10" + string(d)
		if dps.ValidSNOMED(code) {
			if broken {
				return prefix + "10" + string('0'+(d-'0'+1)%10)
			}
			return code
		}
	}
	t.Fatalf("no check digit for %s", prefix)
	return ""
}

// refusedCase is a record the receiver would refuse, one per row rule: break makes it so after it was
// added, fix puts it right. $1 is the record's id.
type refusedCase struct {
	rule        dps.Rule
	spec        demodata.RecordSpec
	break_, fix string
}

// TestRefusedRowsStayQueued: each record that breaks one of the receiver's row rules is left out of the
// file, stays queued, is counted (summary and metric) and listed with its rule; a second export refuses
// it again; once put right, the next export carries it and the refusal is forgotten.
func TestRefusedRowsStayQueued(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	patient := `UPDATE patients SET %s WHERE id = (SELECT patient_id FROM vaccination_records WHERE id = $1)`
	record := `UPDATE vaccination_records SET %s WHERE id = $1`
	// Two HPV vaccines that are wrong only in one code each.
	var hpvVaccine int64
	if err := e.pool.QueryRow(ctx, `SELECT id FROM vaccines WHERE snomed_product_code = '33493111000001108'`).Scan(&hpvVaccine); err != nil {
		t.Fatal(err)
	}
	badVaccine := func(product, procedure string) int64 {
		var id int64
		if err := e.pool.QueryRow(ctx, `
			INSERT INTO vaccines (programme_id, brand, manufacturer, snomed_product_code, snomed_product_term,
			                      snomed_procedure_code, snomed_procedure_term, method, dose_volume_ml)
			SELECT programme_id, brand || ' (test)', manufacturer, $1, snomed_product_term, $2, snomed_procedure_term, method, dose_volume_ml
			FROM vaccines WHERE id = $3 RETURNING id`, product, procedure, hpvVaccine).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	badProcedure := badVaccine(validSNOMEDWith(t, "999999911", false), "761841001")
	badProduct := badVaccine(validSNOMEDWith(t, "999999922", true), "761841000")
	nhs := demodata.NewNHSNumbers(77)

	cases := []refusedCase{
		{rule: dps.RuleNHSNumber, break_: fmt.Sprintf(patient, "nhs_number = '9992686767'"), fix: fmt.Sprintf(patient, "nhs_number = '"+nhs.Next()+"'")},
		{rule: dps.RuleForename, break_: fmt.Sprintf(patient, "given_name = '   '"), fix: fmt.Sprintf(patient, "given_name = 'Ada'")},
		{rule: dps.RuleSurname, break_: fmt.Sprintf(patient, "family_name = repeat('x', 36)"), fix: fmt.Sprintf(patient, "family_name = 'Lovelace'")},
		{rule: dps.RuleDateOfBirth, break_: fmt.Sprintf(patient, "date_of_birth = current_date + 30"), fix: fmt.Sprintf(patient, "date_of_birth = '2012-01-01'")},
		{rule: dps.RuleDateAndTime, break_: fmt.Sprintf(record, "performed_at = now() + interval '2 days'"), fix: fmt.Sprintf(record, "performed_at = '2024-09-02 10:00+01'")},
		{rule: dps.RuleRecordedDate, break_: fmt.Sprintf(record, "created_at = now() + interval '2 days'"), fix: fmt.Sprintf(record, "created_at = '2024-09-02 10:00+01'")},
		{rule: dps.RuleSiteCode, spec: demodata.RecordSpec{TeamODS: "RZZ01"},
			break_: `UPDATE teams SET ods_code = ' ' WHERE id = (SELECT team_id FROM vaccination_records WHERE id = $1)`,
			fix:    `UPDATE teams SET ods_code = 'RZZ01' WHERE id = (SELECT team_id FROM vaccination_records WHERE id = $1)`},
		{rule: dps.RuleProcedure, break_: fmt.Sprintf(record, fmt.Sprintf("vaccine_id = %d", badProcedure)), fix: fmt.Sprintf(record, fmt.Sprintf("vaccine_id = %d", hpvVaccine))},
		{rule: dps.RuleProduct, break_: fmt.Sprintf(record, fmt.Sprintf("vaccine_id = %d", badProduct)), fix: fmt.Sprintf(record, fmt.Sprintf("vaccine_id = %d", hpvVaccine))},
		{rule: dps.RuleDoseSequence, break_: fmt.Sprintf(record, "dose_sequence = 10"), fix: fmt.Sprintf(record, "dose_sequence = 2")},
		{rule: dps.RuleExpiryDate, spec: demodata.RecordSpec{BatchName: "BADEXPIRY"},
			break_: `UPDATE batches SET expiry = '10000-01-01' WHERE id = (SELECT batch_id FROM vaccination_records WHERE id = $1)`,
			fix:    `UPDATE batches SET expiry = '2025-09-30' WHERE id = (SELECT batch_id FROM vaccination_records WHERE id = $1)`},
		{rule: dps.RuleSiteRoute, break_: fmt.Sprintf(record, "delivery_site = 'nose'"), fix: fmt.Sprintf(record, "delivery_site = 'right_arm_upper_position'")},
		{rule: dps.RuleDoseAmount, break_: fmt.Sprintf(record, "dose_volume_ml = 0"), fix: fmt.Sprintf(record, "dose_volume_ml = 0.5")},
		{rule: dps.RuleLocation, spec: demodata.RecordSpec{SchoolURN: "100777"},
			break_: `UPDATE locations SET urn = 'URN777' WHERE id = (SELECT location_id FROM vaccination_records WHERE id = $1)`,
			fix:    `UPDATE locations SET urn = '100777' WHERE id = (SELECT location_id FROM vaccination_records WHERE id = $1)`},
	}
	if len(cases) < 10 {
		t.Fatalf("only %d rules covered", len(cases))
	}
	good, goodUUID := e.addRecord(demodata.RecordSpec{})
	_ = good
	ids, uuids := make([]int64, len(cases)), map[string]dps.Rule{}
	for i, c := range cases {
		spec := c.spec
		spec.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		ids[i], _ = e.addRecord(spec)
		e.exec(c.break_, ids[i])
		uuids[spec.UUID] = c.rule
	}

	metrics := NewMetrics(prometheus.NewRegistry())
	x, err := New(Config{Pool: e.pool, Objects: e.objects, Logger: e.log, SenderODS: testSenderODS, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	run := func(dryRun bool) Result {
		t.Helper()
		req := request("HPV")
		req.DryRun = dryRun
		res, err := x.Export(ctx, req)
		if err != nil || len(res) != 1 {
			t.Fatalf("export: %v %v", res, err)
		}
		return res[0]
	}
	wantByRule := map[string]int{}
	for _, c := range cases {
		wantByRule[string(c.rule)]++
	}

	// A dry run shows the refusals and records none.
	if dry := run(true); dry.Status != DryRun || dry.Rows != 1 || dry.Refused != len(cases) || !equalCounts(dry.RefusedByRule, wantByRule) {
		t.Fatalf("dry run %+v", dry)
	}
	if n := e.count(`SELECT count(*) FROM dps_refused_records`); n != 0 {
		t.Fatalf("a dry run recorded %d refusals", n)
	}

	first := run(false)
	if first.Status != Created || first.Rows != 1 || first.Refused != len(cases) || !equalCounts(first.RefusedByRule, wantByRule) {
		t.Fatalf("first export %+v, want 1 row and %d refused by rule %v", first, len(cases), wantByRule)
	}
	file := e.file(first.ExportID)
	if !bytes.Contains(file, []byte(goodUUID)) {
		t.Fatal("the good record is not in the file")
	}
	for u := range uuids {
		if bytes.Contains(file, []byte(u)) {
			t.Errorf("refused record %s is in the file", u)
		}
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, ids); n != len(cases) {
		t.Errorf("%d refused records still queued, want %d", n, len(cases))
	}
	if n := e.count(`SELECT count(*) FROM dps_export_records WHERE export_id = $1`, first.ExportID); n != 1 {
		t.Errorf("export links %d records, want only the one in the file", n)
	}
	listed, err := ListRefused(ctx, e.pool, "HPV")
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(cases) {
		t.Fatalf("listed %d refused records, want %d: %+v", len(listed), len(cases), listed)
	}
	for _, r := range listed {
		if uuids[r.RecordUUID] != dps.Rule(r.Rule) || r.Programme != "HPV" || r.Action != "new" || r.Reason == "" || r.Field == "" || r.TimesRefused != 1 {
			t.Errorf("listed %+v, want rule %s", r, uuids[r.RecordUUID])
		}
	}
	if other, _ := ListRefused(ctx, e.pool, "FLU"); len(other) != 0 {
		t.Errorf("FLU lists %d", len(other))
	}
	for rule, n := range wantByRule {
		if got := testutil.ToFloat64(metrics.RowsRefused.WithLabelValues("HPV", rule)); got != float64(n) {
			t.Errorf("dps_producer_rows_refused_total{reason=%q} = %v, want %d (dry runs not counted)", rule, got, n)
		}
	}

	// Nothing put right: every candidate is refused again; no file, but the refusals are kept.
	second := run(false)
	if second.Status != NothingToSend || second.Refused != len(cases) || second.ExportID != "" {
		t.Fatalf("second export %+v, want nothing to send and %d refused", second, len(cases))
	}
	if n := e.count(`SELECT count(*) FROM dps_refused_records WHERE times_refused = 2`); n != len(cases) {
		t.Errorf("%d refusals counted twice, want %d", n, len(cases))
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != len(cases) {
		t.Errorf("%d queued after the second export, want %d", n, len(cases))
	}

	// Put right: the next export carries every one of them, and the refusals are gone.
	for i, c := range cases {
		e.exec(c.fix, ids[i])
	}
	third := run(false)
	if third.Status != Created || third.Rows != len(cases) || third.Refused != 0 || third.Actions["new"] != len(cases) {
		t.Fatalf("third export %+v, want %d new rows", third, len(cases))
	}
	file = e.file(third.ExportID)
	for u := range uuids {
		if !bytes.Contains(file, []byte(u)) {
			t.Errorf("record %s, put right, is not in the next file", u)
		}
	}
	if listed, _ := ListRefused(ctx, e.pool, ""); len(listed) != 0 {
		t.Errorf("still listed after going out: %+v", listed)
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != 0 {
		t.Errorf("%d still queued", n)
	}
}

// TestRefusalForgottenWhenNoLongerNeeded: a refused new record that is then discarded needs no sending
// (it never went out), so it is no longer listed.
func TestRefusalForgottenWhenNoLongerNeeded(t *testing.T) {
	e := newEnv(t)
	id, _ := e.addRecord(demodata.RecordSpec{})
	e.exec(`UPDATE vaccination_records SET dose_sequence = 10 WHERE id = $1`, id)
	if res := e.exportOne(request("HPV")); res.Refused != 1 {
		t.Fatalf("%+v", res)
	}
	e.exec(`UPDATE vaccination_records SET discarded_at = now(), updated_at = now() WHERE id = $1`, id)
	if res := e.exportOne(request("HPV")); res.Status != NothingToSend || res.Refused != 0 {
		t.Fatalf("%+v", res)
	}
	if n := e.count(`SELECT count(*) FROM dps_refused_records`); n != 0 {
		t.Fatalf("%d refusals kept for a record that needs nothing", n)
	}
}

// TestFileNamesUnique: exports of one programme made back to back, several within one second, all get
// different names, each from its own second, in order; every name is what the receiver accepts.
func TestFileNamesUnique(t *testing.T) {
	e := newEnv(t)
	var names []string
	for i := 0; i < 4; i++ {
		e.addRecord(demodata.RecordSpec{})
		res := e.exportOne(request("HPV"))
		if res.Status != Created {
			t.Fatalf("%+v", res)
		}
		names = append(names, res.Filename)
	}
	var prev time.Time
	for i, n := range names {
		p, err := dps.ParseFileName(n)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !p.At.After(prev) {
			t.Errorf("name %d (%s) is not after the one before (%s)", i, n, names[i-1])
		}
		prev = p.At
	}
	// Four exports normally take well under a second or two: at least two shared a second of the clock.
	sameSecond := e.count(`
		SELECT count(*) FROM (SELECT date_trunc('second', created_at) s FROM dps_exports GROUP BY 1 HAVING count(*) > 1) x`)
	t.Logf("names %s; seconds shared by two exports: %d", strings.Join(names, " "), sameSecond)
	// Force the case: the last name's second is still to come, as when two exports fall in one second.
	e.exec(`UPDATE dps_exports SET file_time = date_trunc('second', clock_timestamp()) + interval '30 seconds'
	        WHERE file_time = (SELECT max(file_time) FROM dps_exports)`)
	var last time.Time
	if err := e.pool.QueryRow(t.Context(), `SELECT max(file_time) FROM dps_exports`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	e.addRecord(demodata.RecordSpec{})
	res := e.exportOne(request("HPV"))
	p, err := dps.ParseFileName(res.Filename)
	if err != nil || !p.At.Equal(last.Add(time.Second)) {
		t.Fatalf("next name %s (%v), want the second after %v", res.Filename, err, last)
	}
}

// TestProgrammeWithoutVaccineType: a programme the receiver has no vaccine type for is refused before
// anything is built; ALL leaves it out and exports the others.
func TestProgrammeWithoutVaccineType(t *testing.T) {
	e := newEnv(t)
	e.exec(`INSERT INTO programmes (code, name) VALUES ('MMR', 'Measles, mumps and rubella')`)
	e.addRecord(demodata.RecordSpec{})
	_, err := e.exporter(e.pool).Export(t.Context(), request("MMR"))
	var unknown *UnknownProgrammeError
	if !errors.As(err, &unknown) || !unknown.NoVaccineType || unknown.Programme != "MMR" {
		t.Fatalf("MMR: %v, want an UnknownProgrammeError for want of a vaccine type", err)
	}
	res, err := e.exporter(e.pool).Export(t.Context(), request(AllProgrammes))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Programme == "MMR" {
			t.Fatalf("ALL exported MMR: %+v", r)
		}
	}
	if len(res) != 4 {
		t.Fatalf("ALL made %d results, want the 4 programmes with a vaccine type", len(res))
	}
}
