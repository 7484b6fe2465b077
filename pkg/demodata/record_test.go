package demodata_test

import (
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

func TestAddRecordGolden(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	id, uuid, err := demodata.AddRecord(ctx, pool, demodata.GoldenRecord())
	if err != nil {
		t.Fatal(err)
	}
	if uuid != "496e37d8-d1ab-4e12-a3a3-9c2e136a0504" {
		t.Errorf("uuid = %s", uuid)
	}
	// The fields of the spec's real DPS row, as the producer will read them.
	var got string
	err = pool.QueryRow(ctx, `
		SELECT concat_ws('|', p.nhs_number, p.given_name, p.family_name, to_char(p.date_of_birth, 'YYYYMMDD'),
			p.gender_code, p.address_postcode,
			to_char(r.performed_at AT TIME ZONE 'Europe/London', 'YYYYMMDD"T"HH24MISS'), t.ods_code, r.uuid,
			coalesce(vr.full_name, ''), to_char(r.created_at AT TIME ZONE 'Europe/London', 'YYYYMMDD'),
			v.snomed_procedure_code, v.snomed_procedure_term, r.dose_sequence, v.snomed_product_code,
			v.snomed_product_term, v.manufacturer, b.name, to_char(b.expiry, 'YYYYMMDD'), r.delivery_site,
			r.delivery_method, r.dose_volume_ml, l.urn, r.draft, r.outcome, r.discarded_at IS NULL)
		FROM vaccination_records r
		JOIN patients p ON p.id = r.patient_id JOIN teams t ON t.id = r.team_id
		JOIN vaccines v ON v.id = r.vaccine_id JOIN batches b ON b.id = r.batch_id
		JOIN locations l ON l.id = r.location_id LEFT JOIN vaccinators vr ON vr.id = r.vaccinator_id
		WHERE r.id = $1`, id).Scan(&got)
	if err != nil {
		t.Fatal(err)
	}
	want := "9992686766|Brenton|Waters|20120818|0|UC0W 0JL|20230609T000000|U1|496e37d8-d1ab-4e12-a3a3-9c2e136a0504||20240821|" +
		"761841000|Administration of vaccine product containing only Human papillomavirus antigen (procedure)|1|" +
		"33493111000001108|Gardasil 9 vaccine suspension for injection 0.5ml pre-filled syringes (Merck Sharp & Dohme (UK) Ltd) (product)|" +
		"Merck Sharp & Dohme|CD5472|20240930|left_arm_upper_position|intramuscular|0.5|123456|f|administered|t"
	if got != want {
		t.Errorf("golden record reads\n%s\nwant\n%s", got, want)
	}
}

func TestQueueTrigger(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	id, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{Programme: "MENACWY", Vaccinator: "Ada Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	queueSeq := func() int64 {
		t.Helper()
		var seq int64
		if err := pool.QueryRow(ctx, `SELECT p.queue_seq FROM dps_pending_records p
			JOIN programmes g ON g.id = p.programme_id AND g.code = 'MENACWY'
			WHERE p.vaccination_record_id = $1`, id).Scan(&seq); err != nil {
			t.Fatalf("record %d not queued for MENACWY: %v", id, err)
		}
		return seq
	}
	inserted := queueSeq()

	// The export takes it out ...
	if _, err := pool.Exec(ctx, "DELETE FROM dps_pending_records WHERE vaccination_record_id = $1", id); err != nil {
		t.Fatal(err)
	}
	// ... and a change puts it back, with a new queue_seq.
	if _, err := pool.Exec(ctx, "UPDATE vaccination_records SET discarded_at = now(), updated_at = now() WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	updated := queueSeq()
	if updated <= inserted {
		t.Errorf("queue_seq after update = %d, want more than %d", updated, inserted)
	}
	// A change while still queued re-queues it too, so an export that read the old
	// queue_seq will not remove it.
	if _, err := pool.Exec(ctx, "UPDATE vaccination_records SET updated_at = now() WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	if again := queueSeq(); again <= updated {
		t.Errorf("queue_seq after second update = %d, want more than %d", again, updated)
	}
}

func TestAddRecordSpecs(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	discarded := time.Date(2024, 10, 1, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		spec demodata.RecordSpec
		want string // outcome|site|method|vaccine|draft|discarded (t or f)
	}{
		{"flu nasal default", demodata.RecordSpec{Programme: "FLU"}, "administered|nose|nasal_spray|43208811000001106|f|f"},
		{"flu injection", demodata.RecordSpec{Programme: "FLU", VaccineProductCode: "45175511000001104"}, "administered|left_arm_upper_position|intramuscular|45175511000001104|f|f"},
		{"td/ipv", demodata.RecordSpec{Programme: "TD_IPV", DoseSequence: 5}, "administered|left_arm_upper_position|intramuscular|7374511000001107|f|f"},
		{"refused", demodata.RecordSpec{Programme: "HPV", Outcome: "refused"}, "refused||||f|f"},
		{"draft", demodata.RecordSpec{Programme: "HPV", Draft: true}, "administered|left_arm_upper_position|intramuscular|33493111000001108|t|f"},
		{"discarded", demodata.RecordSpec{Programme: "MENACWY", DiscardedAt: &discarded}, "administered|left_arm_upper_position|intramuscular|39779611000001104|f|t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, _, err := demodata.AddRecord(ctx, pool, tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			if err := pool.QueryRow(ctx, `
				SELECT concat_ws('|', r.outcome, coalesce(r.delivery_site, ''), coalesce(r.delivery_method, ''),
				       coalesce(v.snomed_product_code, ''), r.draft, r.discarded_at IS NOT NULL)
				FROM vaccination_records r LEFT JOIN vaccines v ON v.id = r.vaccine_id WHERE r.id = $1`, id).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if _, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{Programme: "MMR"}); err == nil {
		t.Error("AddRecord accepted an unknown programme")
	}
}
