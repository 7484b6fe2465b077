package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// TestFirstExportIsLinear guards the first export of a large backlog, the case that was quadratic: on
// a fresh seed (no export yet, no statistics but what the seed left) the plan that decides the
// candidates reads no table sequentially, and the time per candidate of what a run does with them
// (decide, link, take; in a transaction rolled back, so that each size can be run again) does not grow
// between 10,000 and 40,000 seeded records by more than a small factor. The figures compared come from
// the same run, so a slow machine slows both. The plan is checked again in the steady state (a year of
// nightly exports). BenchmarkExportCommand measures the whole command.
func TestFirstExportIsLinear(t *testing.T) {
	const maxGrowth = 2.0 // a quadratic run grows by up to 4 (the old one: 4.7 from 50,000 to 200,000); its plan fails anyway
	const runs = 5
	sizes := []int{10_000, 40_000}
	perCandidate := make([]time.Duration, len(sizes))
	pools := make([]*pgxpool.Pool, len(sizes))
	candidates := make([]int, len(sizes))
	ctx := t.Context()
	for i, records := range sizes {
		_, pool := pgtest.NewMigratedDatabase(t)
		pools[i] = pool
		if _, err := demodata.Seed(ctx, pool, demodata.Options{Records: records, Seed: 5}); err != nil {
			t.Fatal(err)
		}
		checkDecidePlan(t, pool, "FLU", fmt.Sprintf("first export, %d records", records))
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM dps_pending_records p JOIN programmes g ON g.id = p.programme_id
			WHERE g.code = 'FLU'`).Scan(&candidates[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The sizes take turns, and each keeps its fastest run, so that a machine busy with other work for
	// a while slows both alike.
	best := []time.Duration{1 << 62, 1 << 62}
	for range runs {
		for i, pool := range pools {
			best[i] = min(best[i], takeCandidates(t, pool, "FLU", candidates[i]))
		}
	}
	for i := range sizes {
		perCandidate[i] = best[i] / time.Duration(candidates[i])
		t.Logf("%d records: %d FLU candidates in %s (best of %d), %s per candidate", sizes[i], candidates[i],
			best[i].Round(time.Millisecond), runs, perCandidate[i])
	}
	growth := float64(perCandidate[1]) / float64(perCandidate[0])
	t.Logf("time per candidate grew %.2f× from %d to %d records", growth, sizes[0], sizes[1])
	if growth > maxGrowth {
		t.Errorf("time per candidate grew %.2f× from %d to %d records (at most %.1f× allowed): the export is not linear in its backlog",
			growth, sizes[0], sizes[1], maxGrowth)
	}

	// The steady state, on the smaller database: the same statement still reads by index only.
	if err := buildSteadyState(t.Context(), pools[0], queueScattered); err != nil {
		t.Fatal(err)
	}
	for _, programme := range []string{"HPV", "FLU", "MENACWY", "TD_IPV"} {
		checkDecidePlan(t, pools[0], programme, "steady state, "+programme)
	}
}

// takeCandidates decides, links and takes the programme's candidates as a run does, in a transaction it
// rolls back, and returns how long that took.
func takeCandidates(t *testing.T, pool *pgxpool.Pool, programme string, want int) time.Duration {
	t.Helper()
	ctx := t.Context()
	var took time.Duration
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `SELECT id FROM programmes WHERE code = $1`, programme).Scan(&id); err != nil {
			return err
		}
		start := time.Now()
		decided, err := decideCandidates(ctx, tx, id)
		if err != nil {
			return err
		}
		linked, err := linkDecided(ctx, tx, uuid.New())
		if err != nil {
			return err
		}
		taken, err := takeDecided(ctx, tx, id)
		if err != nil {
			return err
		}
		took = time.Since(start)
		if decided != int64(want) || taken != int64(want) || linked == 0 {
			t.Fatalf("%d candidates decided, %d taken, %d linked; want %d decided and taken", decided, taken, linked, want)
		}
		return errRollback
	})
	if err != nil && !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	return took
}

// checkDecidePlan runs sqlDecideCandidates under EXPLAIN ANALYZE with the settings the export uses, in a
// transaction it rolls back, and fails if any table is read whole, sequentially or by an index.
func checkDecidePlan(t *testing.T, pool *pgxpool.Pool, programme, what string) {
	t.Helper()
	var id int64
	if err := pool.QueryRow(t.Context(), `SELECT id FROM programmes WHERE code = $1`, programme).Scan(&id); err != nil {
		t.Fatal(err)
	}
	root, took, plan := explain(t, pool, decidePlanSettings, "ANALYZE, FORMAT JSON", sqlDecideCandidates, id)
	var scans []string
	root.walk(func(n planNode) {
		if !strings.Contains(n.NodeType, "Scan") || n.RelationName == "" {
			return
		}
		scans = append(scans, fmt.Sprintf("%s on %s ×%d", n.NodeType, n.RelationName, n.Loops))
		if n.NodeType == "Seq Scan" {
			t.Errorf("%s: sequential scan of %s (%d loops)", what, n.RelationName, n.Loops)
		}
	})
	// An index scan with no condition reads the whole table, in index order: for the history, every
	// link ever made (the form Postgres gives a probe it has chosen to hash once, not run per candidate).
	root.walk(func(n planNode) {
		if strings.Contains(n.NodeType, "Index") && n.RelationName != "" && n.IndexCond == "" {
			t.Errorf("%s: %s of %s has no index condition: it reads the table whole", what, n.NodeType, n.RelationName)
		}
	})
	t.Logf("%s: decided in %.1f ms; %s", what, took, strings.Join(scans, "; "))
	if t.Failed() {
		t.Logf("plan: %s", plan)
	}
}

// explain runs sql under EXPLAIN (options) with settings set, in a transaction it rolls back, and
// returns the plan's root, its execution time (with ANALYZE) and the plan as Postgres wrote it.
func explain(t *testing.T, pool *pgxpool.Pool, settings [][2]string, options, sql string, args ...any) (planNode, float64, []byte) {
	t.Helper()
	ctx := t.Context()
	var doc []struct {
		Plan          planNode `json:"Plan"`
		ExecutionTime float64  `json:"Execution Time"`
	}
	var plan []byte
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		err := withLocalSettings(ctx, tx, settings, func() error {
			return tx.QueryRow(ctx, "EXPLAIN ("+options+") "+sql, args...).Scan(&plan)
		})
		if err != nil {
			return err
		}
		if err := json.Unmarshal(plan, &doc); err != nil {
			return err
		}
		return errRollback
	})
	if err != nil && !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	return doc[0].Plan, doc[0].ExecutionTime, plan
}

var errRollback = errors.New("roll back")

type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexCond    string     `json:"Index Cond"`
	Loops        int        `json:"Actual Loops"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(visit func(planNode)) {
	visit(n)
	for _, c := range n.Plans {
		c.walk(visit)
	}
}

// TestFileQueryStreams: each of the file's two statements keeps its shape (see fileRowsQuery) and reads
// no table sequentially, nor any table but the links, records and patients, on a first export and in
// the steady state. The streamed one sorts before it joins the patients and never sorts the finished
// rows (its top node is a join, so the first row reaches the writer before the last is joined); the
// joined one joins the patients below its sort, where parallel workers can share the probes.
func TestFileQueryStreams(t *testing.T) {
	for _, queue := range []string{"", queueRecent, queueScattered} {
		e := newEnv(t)
		if _, err := demodata.Seed(t.Context(), e.pool, demodata.Options{Records: 5000, Seed: 3}); err != nil {
			t.Fatal(err)
		}
		what := "first export"
		if queue != "" {
			what = "steady state, " + queue + " queue"
			if err := buildSteadyState(t.Context(), e.pool, queue); err != nil {
				t.Fatal(err)
			}
		}
		res := e.exportOne(request("FLU"))
		if res.Rows == 0 {
			t.Fatalf("%s: %+v", what, res)
		}
		checkFilePlan(t, e.pool, res.ExportID, sqlExportRowsStreamed, what+", streamed")
		checkFilePlan(t, e.pool, res.ExportID, sqlExportRowsJoined, what+", joined")
	}
}

func checkFilePlan(t *testing.T, pool *pgxpool.Pool, exportID, query, what string) {
	t.Helper()
	root, _, plan := explain(t, pool, fileSettings, "FORMAT JSON", query, exportID)
	// Where the patients are joined: above every sort (streamed) or below one (joined).
	var patientsBelowSort func(n planNode, underSort bool) bool
	patientsBelowSort = func(n planNode, underSort bool) bool {
		if n.RelationName == "patients" {
			return underSort
		}
		underSort = underSort || n.NodeType == "Sort"
		for _, c := range n.Plans {
			if patientsBelowSort(c, underSort) {
				return true
			}
		}
		return false
	}
	switch query {
	case sqlExportRowsStreamed:
		if !strings.Contains(root.NodeType, "Nested Loop") {
			t.Errorf("%s: the file query's top node is %s, not a join: the finished rows are sorted before the first is returned", what, root.NodeType)
		}
		if patientsBelowSort(root, false) {
			t.Errorf("%s: the patients are joined before the sort, so every probe runs before the first row", what)
		}
	case sqlExportRowsJoined:
		if !patientsBelowSort(root, false) {
			t.Errorf("%s: the patients are joined after the sort, in the leader alone", what)
		}
	}
	root.walk(func(n planNode) {
		if n.NodeType == "Seq Scan" {
			t.Errorf("%s: the file query scans %s sequentially", what, n.RelationName)
		}
		switch n.RelationName {
		case "", "dps_export_records", "vaccination_records", "patients":
		default:
			t.Errorf("%s: the file query reads %s for every row; it is in the reference", what, n.RelationName)
		}
	})
	if t.Failed() {
		t.Logf("plan: %s", plan)
	}
}

// TestFileStatementsAgree: the file's two statements return the same rows in the same order, so the
// size that chooses between them never changes a file. The suite's exports are small and use the
// joined one; here both read the links of one export, on a first export and in the steady state.
func TestFileStatementsAgree(t *testing.T) {
	for _, queue := range []string{"", queueScattered} {
		e := newEnv(t)
		if _, err := demodata.Seed(t.Context(), e.pool, demodata.Options{Records: 3000, Seed: 5}); err != nil {
			t.Fatal(err)
		}
		if queue != "" {
			if err := buildSteadyState(t.Context(), e.pool, queue); err != nil {
				t.Fatal(err)
			}
		}
		res := e.exportOne(request("HPV"))
		if res.Rows == 0 {
			t.Fatalf("queue %q: %+v", queue, res)
		}
		streamed := fileRowsText(t, e.pool, sqlExportRowsStreamed, res.ExportID)
		joined := fileRowsText(t, e.pool, sqlExportRowsJoined, res.ExportID)
		if len(streamed) != res.Rows || len(joined) != res.Rows {
			t.Fatalf("queue %q: %d rows streamed, %d joined, the export has %d", queue, len(streamed), len(joined), res.Rows)
		}
		for i := range streamed {
			for col := range streamed[i] {
				if streamed[i][col] != joined[i][col] {
					// Named by record id and column only: the rows hold (synthetic) patient details.
					t.Fatalf("queue %q: row %d, column %d differs (record %s streamed, %s joined)", queue, i, col+1, streamed[i][0], joined[i][0])
				}
			}
		}
	}
}

// fileRowsText runs a file statement under fileSettings and returns each row's values as text.
func fileRowsText(t *testing.T, pool *pgxpool.Pool, query, exportID string) [][]string {
	t.Helper()
	var out [][]string
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		return withLocalSettings(t.Context(), tx, fileSettings, func() error {
			rows, err := tx.Query(t.Context(), query, exportID)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					return err
				}
				row := make([]string, len(vals))
				for i, v := range vals {
					row[i] = fmt.Sprint(v)
				}
				out = append(out, row)
			}
			return rows.Err()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFileRowsQueryBySize(t *testing.T) {
	for _, tc := range []struct {
		linked int
		want   string
	}{
		{1, sqlExportRowsJoined},
		{streamRowsFrom - 1, sqlExportRowsJoined},
		{streamRowsFrom, sqlExportRowsStreamed},
		{10 * streamRowsFrom, sqlExportRowsStreamed},
	} {
		if got := fileRowsQuery(tc.linked); got != tc.want {
			t.Errorf("fileRowsQuery(%d) is the other statement", tc.linked)
		}
	}
}
