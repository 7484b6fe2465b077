package export

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// copyBaseline is what Postgres does alone: the same 34 columns, formatted as DPS wants them, from the
// same joins in the same order, written by COPY as pipe-separated, fully quoted CSV.
const copyBaseline = `
COPY (
SELECT coalesce(pa.nhs_number, ''), pa.given_name, pa.family_name, to_char(pa.date_of_birth, 'YYYYMMDD'),
       pa.gender_code::text,
       CASE WHEN btrim(coalesce(pa.address_postcode, '')) = '' THEN 'ZZ99 3WZ' ELSE pa.address_postcode END,
       to_char(r.performed_at AT TIME ZONE 'Europe/London', 'YYYYMMDD"T"HH24MISS') ||
           CASE WHEN (r.performed_at AT TIME ZONE 'Europe/London') - (r.performed_at AT TIME ZONE 'UTC') = interval '1 hour'
                THEN '01' ELSE '00' END,
       t.ods_code, 'https://fhir.nhs.uk/Id/ods-organization-code', r.uuid::text,
       'https://manage-vaccinations-in-schools.nhs.uk/vaccination-records', er.action,
       coalesce(substring(va.full_name from '^\S+'), ''), coalesce(substring(va.full_name from '^\S+\s+(.*)$'), ''),
       to_char(r.created_at AT TIME ZONE 'Europe/London', 'YYYYMMDD'), 'TRUE',
       v.snomed_procedure_code, v.snomed_procedure_term, coalesce(r.dose_sequence::text, ''),
       v.snomed_product_code, v.snomed_product_term, v.manufacturer, b.name, coalesce(to_char(b.expiry, 'YYYYMMDD'), ''),
       CASE r.delivery_site WHEN 'left_arm_upper_position' THEN '368208006' WHEN 'right_arm_upper_position' THEN '368209003'
            WHEN 'left_thigh' THEN '61396006' WHEN 'right_thigh' THEN '11207009' WHEN 'nose' THEN '279549004' ELSE '' END,
       CASE r.delivery_site WHEN 'left_arm_upper_position' THEN 'Structure of left upper arm (body structure)'
            WHEN 'right_arm_upper_position' THEN 'Structure of right upper arm (body structure)'
            WHEN 'left_thigh' THEN 'Structure of left thigh (body structure)' WHEN 'right_thigh' THEN 'Structure of right thigh (body structure)'
            WHEN 'nose' THEN 'Nasal cavity structure (body structure)' ELSE '' END,
       CASE r.delivery_method WHEN 'intramuscular' THEN '78421000' WHEN 'subcutaneous' THEN '34206005' WHEN 'nasal_spray' THEN '46713006' ELSE '' END,
       CASE r.delivery_method WHEN 'intramuscular' THEN 'Intramuscular route (qualifier value)'
            WHEN 'subcutaneous' THEN 'Subcutaneous route (qualifier value)' WHEN 'nasal_spray' THEN 'Nasal route (qualifier value)' ELSE '' END,
       coalesce(coalesce(r.dose_volume_ml, v.dose_volume_ml)::text, ''), '258773002', 'Milliliter (qualifier value)', '',
       CASE WHEN l.type = 'school' THEN l.urn ELSE t.ods_code END,
       CASE WHEN l.type = 'school' THEN 'https://fhir.hl7.org.uk/Id/urn-school-number' ELSE 'https://fhir.nhs.uk/Id/ods-organization-code' END
%s
) TO STDOUT WITH (FORMAT csv, DELIMITER '|', FORCE_QUOTE *)`

// benchExport seeds DPS_BENCH_RECORDS records (default 1,000,000) and links every exportable one to a
// single export, so that both sides of the comparison read the same rows.
func benchExport(b *testing.B) (pool *pgxpool.Pool, url, exportID string, rows int) {
	b.Helper()
	n := 1_000_000
	if v := os.Getenv("DPS_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("DPS_BENCH_RECORDS: %v", err)
		}
	}
	ctx := context.Background()
	url, pool = pgtest.NewMigratedDatabase(b)
	start := time.Now()
	sum, err := demodata.Seed(ctx, pool, demodata.Options{Records: n, Seed: 7})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d records (%d exportable) in %s", sum.Records, sum.Exportable, time.Since(start).Round(time.Millisecond))
	exportID = uuid.NewString()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO dps_export_requests (request_id, programme, requested_by, requested_at) VALUES ('bench', 'ALL', 'bench', now())`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO dps_exports (id, programme_id, request_id, filename) SELECT $1, min(id), 'bench', 'bench.csv' FROM programmes`, exportID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
			SELECT $1, id, updated_at, 'new' FROM vaccination_records WHERE NOT draft AND outcome = 'administered' AND discarded_at IS NULL`, exportID)
		rows = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	return pool, url, exportID, rows
}

// BenchmarkCSVBuildVsCopy builds the DPS file of an export over every exportable seeded record (to a
// SHA-256 digest, as the producer does on its way to the Object Store) and runs the COPY baseline on
// the same database in the same run. It reports the ratio build/COPY (goal ≤ 1.5) and the peak RSS of
// a child process that does nothing but build the file (goal < 64 MiB).
func BenchmarkCSVBuildVsCopy(b *testing.B) {
	pool, url, exportID, rows := benchExport(b)
	ctx := context.Background()
	x, err := New(Config{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	var build, cp time.Duration
	var size, copySize int64
	for b.Loop() {
		t0 := time.Now()
		d := newDigestWriter()
		err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			st, err := x.writeFile(ctx, tx, exportID, rows, d)
			if err == nil && st.rows != rows {
				err = fmt.Errorf("%d rows written, want %d (%d refused)", st.rows, rows, len(st.refused))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		build += time.Since(t0)
		size = d.n

		t1 := time.Now()
		conn, err := pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		from := strings.Replace(exportRowsFrom, "$1", "'"+exportID+"'", 1)
		tag, err := conn.Conn().PgConn().CopyTo(ctx, countingDiscard{&copySize}, fmt.Sprintf(copyBaseline, from))
		conn.Release()
		if err != nil {
			b.Fatal(err)
		}
		cp += time.Since(t1)
		if int(tag.RowsAffected()) != rows {
			b.Fatalf("COPY wrote %d rows, want %d", tag.RowsAffected(), rows)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(rows), "rows")
	b.ReportMetric(build.Seconds()/n, "build-s")
	b.ReportMetric(cp.Seconds()/n, "copy-s")
	b.ReportMetric(build.Seconds()/cp.Seconds(), "build/copy")
	b.ReportMetric(float64(rows)/(build.Seconds()/n), "rows/s")
	b.ReportMetric(float64(size)/float64(rows), "B/row")
	b.Logf("file %d bytes; COPY output %d bytes per run", size, copySize/int64(b.N))

	maxRSS := childPeakRSS(b, url, exportID)
	b.ReportMetric(float64(maxRSS)/(1<<20), "peak-RSS-MiB")
}

type countingDiscard struct{ n *int64 }

func (c countingDiscard) Write(p []byte) (int, error) { *c.n += int64(len(p)); return len(p), nil }

// childPeakRSS builds the file once in a child process (this test binary running TestBenchChild) and
// returns the child's peak resident set size in bytes: VmHWM from its /proc/self/status, read by the
// child as it ends. (The rusage of an exec'd child is no use here: Linux carries the parent's RSS at
// fork time into it, and the parent has just seeded a million rows.)
func childPeakRSS(b *testing.B, url, exportID string) int64 {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DPS_BENCH_CHILD_URL="+url, "DPS_BENCH_CHILD_EXPORT="+exportID)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child: %v\n%s", err, out)
	}
	b.Logf("child: %s", strings.TrimSpace(string(out)))
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("child reported no VmHWM:\n%s", out)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb * 1024
}

// TestBenchChild is the child of BenchmarkCSVBuildVsCopy; it does nothing in a normal test run.
func TestBenchChild(t *testing.T) {
	url, exportID := os.Getenv("DPS_BENCH_CHILD_URL"), os.Getenv("DPS_BENCH_CHILD_EXPORT")
	if url == "" {
		t.Skip("only run as BenchmarkCSVBuildVsCopy's child")
	}
	ctx := context.Background()
	pool, err := store.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	x, err := New(Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	var linked int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dps_export_records WHERE export_id = $1`, exportID).Scan(&linked); err != nil {
		t.Fatal(err)
	}
	d := newDigestWriter()
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		st, err := x.writeFile(ctx, tx, exportID, linked, d)
		if err == nil {
			status, _ := os.ReadFile("/proc/self/status")
			hwm := regexp.MustCompile(`VmHWM:\s+\d+ kB`).Find(status)
			fmt.Printf("built %d rows, %d bytes; %s\n", st.rows, d.n, hwm)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
