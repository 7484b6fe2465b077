package store_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// candidateQuery is the shape of "what is unsent for programme P": the small candidate
// table, each candidate's record, and the record's last carriage (the newest
// dps_export_records row whose export did not fail).
const candidateQuery = `
SELECT r.id, r.uuid, r.updated_at, r.draft, r.outcome, r.discarded_at, p.queue_seq,
       c.action, c.record_updated_at
FROM dps_pending_records p
JOIN vaccination_records r ON r.id = p.vaccination_record_id
LEFT JOIN LATERAL (
    SELECT er.action, er.record_updated_at
    FROM dps_export_records er
    JOIN dps_exports e ON e.id = er.export_id
    WHERE er.vaccination_record_id = r.id AND e.status <> 'failed'
    ORDER BY e.created_at DESC
    LIMIT 1
) c ON true
WHERE p.programme_id = $1`

// TestCandidateQueryUsesIndexes seeds records, puts the database in its steady state
// (almost every record already exported, a nightly trickle pending), analyses it and
// checks that the candidate query never scans vaccination_records or
// dps_export_records whole: its cost follows the pending set, not the table sizes.
func TestCandidateQueryUsesIndexes(t *testing.T) {
	records := 60_000
	if testing.Short() {
		records = 12_000
	}
	// DPS_INDEX_TEST_RECORDS=10000000 checks the plans at production size (minutes; never in CI).
	if v, err := strconv.Atoi(os.Getenv("DPS_INDEX_TEST_RECORDS")); err == nil && v > 0 {
		records = v
	}
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	if _, err := demodata.Seed(ctx, pool, demodata.Options{Records: records, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	steadyState := []string{
		// A year of nightly exports per programme, a few of which failed.
		`INSERT INTO dps_exports (id, programme_id, filename, status, row_count, created_at)
		 SELECT gen_random_uuid(), g.id, 'Vaccinations-' || g.code || '-' || d::date || '.csv',
		        CASE WHEN random() < 0.03 THEN 'failed' ELSE 'acknowledged' END, 0, d
		 FROM programmes g, generate_series(now() - interval '365 days', now() - interval '1 day', interval '1 day') d`,
		// Every record but the pending 1% went out in one of its programme's exports ...
		`WITH e AS (SELECT id, programme_id, row_number() OVER (PARTITION BY programme_id ORDER BY created_at) - 1 AS n
		            FROM dps_exports)
		 INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		 SELECT e.id, r.id, r.updated_at, 'new'
		 FROM vaccination_records r JOIN e ON e.programme_id = r.programme_id AND e.n = r.id % 300
		 WHERE r.id % 100 <> 0`,
		// ... and some went out again as updates in the latest one.
		`WITH e AS (SELECT DISTINCT ON (programme_id) id, programme_id FROM dps_exports ORDER BY programme_id, created_at DESC)
		 INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		 SELECT e.id, r.id, r.updated_at, 'update'
		 FROM vaccination_records r JOIN e ON e.programme_id = r.programme_id
		 WHERE r.id % 100 <> 0 AND r.id % 10 = 1
		 ON CONFLICT DO NOTHING`,
		`DELETE FROM dps_pending_records WHERE vaccination_record_id % 100 <> 0`,
		// What autovacuum would have done by the next night.
		`VACUUM ANALYZE dps_pending_records, vaccination_records, dps_export_records, dps_exports`,
	}
	for _, sql := range steadyState {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	ref, err := demodata.Reference(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, programme := range []string{"HPV", "FLU", "MENACWY", "TD_IPV"} {
		t.Run(programme, func(t *testing.T) {
			var plan []byte
			if err := pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+candidateQuery, ref.Programme(programme)).Scan(&plan); err != nil {
				t.Fatal(err)
			}
			var doc []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(plan, &doc); err != nil {
				t.Fatal(err)
			}
			var scans []string
			doc[0].Plan.walk(func(n planNode) {
				if strings.Contains(n.NodeType, "Scan") {
					scans = append(scans, fmt.Sprintf("%s on %s", n.NodeType, n.RelationName))
				}
				if n.NodeType == "Seq Scan" && (n.RelationName == "vaccination_records" || n.RelationName == "dps_export_records") {
					t.Errorf("sequential scan of %s", n.RelationName)
				}
			})
			if t.Failed() {
				t.Logf("plan: %s", plan)
			}
			t.Logf("scans: %s", strings.Join(scans, "; "))
			var analysed []byte
			if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+candidateQuery, ref.Programme(programme)).Scan(&analysed); err != nil {
				t.Fatal(err)
			}
			var run []struct {
				ExecutionTime float64 `json:"Execution Time"`
				Plan          struct {
					Rows int `json:"Actual Rows"`
				} `json:"Plan"`
			}
			if err := json.Unmarshal(analysed, &run); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d records: %d candidates read in %.1f ms", records, run[0].Plan.Rows, run[0].ExecutionTime)
		})
	}
}

type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(visit func(planNode)) {
	visit(n)
	for _, c := range n.Plans {
		c.walk(visit)
	}
}
