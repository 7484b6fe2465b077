package demodata_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// seedNow pins the seed's clock so that tests and benchmarks are reproducible.
var seedNow = time.Date(2025, 7, 18, 9, 0, 0, 0, time.UTC)

// TestSeed100k is the check: 100,000 records over the four programmes, every NHS
// number valid, a realistic share not exportable, and everything queued for export.
func TestSeed100k(t *testing.T) {
	records := 100_000
	if testing.Short() {
		records = 10_000
	}
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	sum, err := demodata.Seed(ctx, pool, demodata.Options{Records: records, Seed: 42, Now: seedNow})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("counts", func(t *testing.T) {
		if got := count(t, pool, "SELECT count(*) FROM vaccination_records"); got != records {
			t.Errorf("vaccination_records = %d, want %d", got, records)
		}
		if sum.Records != records {
			t.Errorf("summary records = %d, want %d", sum.Records, records)
		}
		if got := count(t, pool, "SELECT count(*) FROM patients"); got != sum.Patients {
			t.Errorf("patients = %d, summary says %d", got, sum.Patients)
		}
		if got := count(t, pool, "SELECT count(DISTINCT uuid) FROM vaccination_records"); got != records {
			t.Errorf("distinct uuids = %d, want %d", got, records)
		}
	})

	t.Run("vacuumed and analysed", func(t *testing.T) {
		// As autovacuum would leave them: the first query after a seed plans with statistics.
		for _, table := range []string{"patients", "vaccination_records", "dps_pending_records"} {
			var vacuumed, analysed bool
			if err := pool.QueryRow(ctx, `SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1`,
				table).Scan(&vacuumed, &analysed); err != nil {
				t.Fatal(err)
			}
			if !vacuumed || !analysed {
				t.Errorf("%s: vacuumed %v, analysed %v after the seed", table, vacuumed, analysed)
			}
		}
	})

	t.Run("four programmes", func(t *testing.T) {
		rows, err := pool.Query(ctx, `
			SELECT p.code, count(*),
			       count(*) FILTER (WHERE NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL)
			FROM vaccination_records r JOIN programmes p ON p.id = r.programme_id GROUP BY p.code`)
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			Code                string
			Records, Exportable int
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 {
			t.Fatalf("records span %d programmes, want 4: %v", len(got), got)
		}
		exportable := 0
		for _, g := range got {
			want := sum.Programmes[g.Code]
			if g.Records != want.Records || g.Exportable != want.Exportable {
				t.Errorf("%s: database has %d records, %d exportable; summary says %d, %d",
					g.Code, g.Records, g.Exportable, want.Records, want.Exportable)
			}
			if g.Records < records/20 {
				t.Errorf("%s has only %d of %d records", g.Code, g.Records, records)
			}
			exportable += g.Exportable
		}
		if exportable != sum.Exportable {
			t.Errorf("exportable = %d, summary says %d", exportable, sum.Exportable)
		}
		// Realistic: most records go to DPS, but a real share must not.
		share := float64(records-exportable) / float64(records)
		if share < 0.10 || share > 0.30 {
			t.Errorf("share not exportable = %.3f, want between 0.10 and 0.30", share)
		}
	})

	t.Run("every kind of record that must not be exported", func(t *testing.T) {
		for _, q := range []string{
			"SELECT count(*) FROM vaccination_records WHERE draft",
			"SELECT count(*) FROM vaccination_records WHERE discarded_at IS NOT NULL",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'refused'",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'not_well'",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'absent_from_school'",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'absent_from_session'",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'contraindications'",
			"SELECT count(*) FROM vaccination_records WHERE outcome = 'already_had'",
		} {
			if n := count(t, pool, q); n == 0 {
				t.Errorf("none: %s", q)
			}
		}
	})

	t.Run("NHS numbers pass mod 11 in Go", func(t *testing.T) {
		rows, err := pool.Query(ctx, "SELECT nhs_number FROM patients")
		if err != nil {
			t.Fatal(err)
		}
		numbers, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		seen := make(map[string]bool, len(numbers))
		for _, n := range numbers {
			if !demodata.ValidNHSNumber(n) || n[:3] != "999" {
				t.Fatalf("invalid or out-of-range NHS number %s", n)
			}
			if seen[n] {
				t.Fatalf("NHS number %s given to two patients", n)
			}
			seen[n] = true
		}
	})

	t.Run("NHS numbers pass mod 11 in SQL", func(t *testing.T) {
		// Weights 10..2 over the first nine digits; 11 - sum%11, 11 → 0, 10 invalid.
		bad := count(t, pool, `
			SELECT count(*) FROM patients p,
			LATERAL (SELECT 11 - sum(substr(p.nhs_number, i, 1)::int * (11 - i)) % 11 AS c
			         FROM generate_series(1, 9) i) s
			WHERE p.nhs_number IS NULL OR p.nhs_number !~ '^999[0-9]{7}$'
			   OR s.c = 10 OR (CASE s.c WHEN 11 THEN 0 ELSE s.c END) <> substr(p.nhs_number, 10, 1)::int`)
		if bad != 0 {
			t.Errorf("%d patients have an NHS number failing mod 11", bad)
		}
	})

	t.Run("administered records are complete", func(t *testing.T) {
		bad := count(t, pool, `
			SELECT count(*) FROM vaccination_records r
			JOIN batches b ON b.id = r.batch_id JOIN vaccines v ON v.id = r.vaccine_id
			WHERE r.outcome = 'administered' AND (
			      r.dose_sequence IS NULL OR r.dose_volume_ml IS NULL OR r.delivery_site IS NULL
			   OR b.vaccine_id <> r.vaccine_id OR v.programme_id <> r.programme_id
			   OR b.expiry < r.performed_at::date
			   OR (v.method = 'nasal') <> (r.delivery_method = 'nasal_spray'))`)
		if bad != 0 {
			t.Errorf("%d administered records are inconsistent", bad)
		}
		if n := count(t, pool, "SELECT count(*) FROM vaccination_records WHERE outcome = 'administered'"); n == 0 ||
			n != count(t, pool, "SELECT count(*) FROM vaccination_records WHERE outcome = 'administered' AND batch_id IS NOT NULL") {
			t.Errorf("administered records without a batch")
		}
		if n := count(t, pool, "SELECT count(*) FROM vaccination_records WHERE performed_at >= $1 OR created_at < performed_at OR updated_at < created_at", seedNow); n != 0 {
			t.Errorf("%d records have impossible timestamps", n)
		}
	})

	t.Run("all queued for export", func(t *testing.T) {
		if n := count(t, pool, `
			SELECT count(*) FROM vaccination_records r
			LEFT JOIN dps_pending_records p ON p.vaccination_record_id = r.id AND p.programme_id = r.programme_id
			WHERE p.vaccination_record_id IS NULL`); n != 0 {
			t.Errorf("%d seeded records are not queued", n)
		}
		// The queue trigger must be back on after the seed.
		id, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{Programme: "FLU"})
		if err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, "SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = $1", id); n != 1 {
			t.Errorf("record added after the seed is not queued")
		}
	})

	t.Run("seeding again adds different records", func(t *testing.T) {
		before := count(t, pool, "SELECT count(*) FROM vaccination_records")
		more, err := demodata.Seed(ctx, pool, demodata.Options{Records: 1000, Seed: 42, Now: seedNow})
		if err != nil {
			t.Fatal(err)
		}
		if got := count(t, pool, "SELECT count(*) FROM vaccination_records"); got != before+more.Records {
			t.Errorf("records = %d, want %d", got, before+more.Records)
		}
		if n := count(t, pool, "SELECT count(*) - count(DISTINCT nhs_number) FROM patients"); n != 0 {
			t.Errorf("%d NHS numbers repeat after a second seed", n)
		}
		for _, q := range []string{"SELECT count(*) FROM programmes", "SELECT count(*) FROM vaccines", "SELECT count(*) FROM teams"} {
			if n := count(t, pool, q); n == 0 || n > 20 {
				t.Errorf("%s = %d: reference data duplicated?", q, n)
			}
		}
	})
}

func TestSeedIsDeterministic(t *testing.T) {
	fingerprint := func(seed int64) []string {
		_, pool := pgtest.NewMigratedDatabase(t)
		if _, err := demodata.Seed(t.Context(), pool, demodata.Options{Records: 5000, Seed: seed, Now: seedNow}); err != nil {
			t.Fatal(err)
		}
		rows, err := pool.Query(t.Context(), `
			SELECT r.uuid::text || '|' || p.nhs_number || '|' || p.given_name || '|' || p.family_name || '|' ||
			       p.date_of_birth || '|' || coalesce(p.address_postcode, '') || '|' || r.outcome || '|' ||
			       coalesce(v.snomed_product_code, '') || '|' || coalesce(b.name, '') || '|' || r.performed_at || '|' ||
			       r.draft || '|' || coalesce(r.discarded_at::text, '') || '|' || t.ods_code
			FROM vaccination_records r JOIN patients p ON p.id = r.patient_id JOIN teams t ON t.id = r.team_id
			LEFT JOIN vaccines v ON v.id = r.vaccine_id LEFT JOIN batches b ON b.id = r.batch_id
			ORDER BY r.id`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b, c := fingerprint(7), fingerprint(7), fingerprint(8)
	if len(a) != 5000 || len(a) != len(b) {
		t.Fatalf("rows: %d and %d, want 5000", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("row %d differs between two seeds with the same value:\n%s\n%s", i, a[i], b[i])
		}
	}
	if a[0] == c[0] {
		t.Errorf("a different seed gave the same first record: %s", a[0])
	}
}

func TestReferenceIsIdempotent(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	first, err := demodata.Reference(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	second, err := demodata.Reference(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Errorf("ids changed: %v then %v", first, second)
	}
	if len(first.Programmes) != 4 || first.Programme("HPV") == 0 {
		t.Errorf("programmes = %v", first.Programmes)
	}
	if n := count(t, pool, "SELECT count(*) FROM vaccines"); n != len(demodata.Vaccines) {
		t.Errorf("vaccines = %d, want %d", n, len(demodata.Vaccines))
	}
	// Every vaccine of every programme carries real-looking SNOMED codes and terms.
	if n := count(t, pool, `SELECT count(*) FROM vaccines WHERE snomed_product_code !~ '^[0-9]{6,18}$'
		OR snomed_procedure_code !~ '^[0-9]{6,18}$' OR snomed_procedure_term NOT LIKE '%(procedure)'`); n != 0 {
		t.Errorf("%d vaccines with malformed SNOMED data", n)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.WithoutCancel(t.Context()), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
