package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// timeCommand is GNU time, which reports the peak RSS of the one process it starts. (The rusage the
// benchmark would get for a child of its own is no use: Linux carries the parent's high-water mark
// into an exec'd child, and the parent has a NATS server in it.)
const timeCommand = "/usr/bin/time"

// BenchmarkExportCommand is what a user does on a first deployment: a fresh `producer seed --records N`
// (DPS_BENCH_RECORDS, default 1,000,000), then the whole `producer export --programme P` as a process,
// for each programme, against the COPY baseline of the same rows (the export's links) in the same run;
// then `--programme ALL` on the same seed as it was. For each it reports the seconds, the ratio
// export/COPY (goal ≤ 1.5, bound 2) and the peak RSS of the producer process (goal < 64 MiB). It does
// this DPS_BENCH_RUNS times (default 3), each run on a copy of the seeded database, and reports the
// median of the runs (see benchRuns).
//
// While each export runs, the recording application keeps writing: every 100 ms it inserts a record
// of the programme being exported (the queue trigger fires) and changes a record of that programme's
// backlog; the slowest of each is reported (goal: well under a second, never the export's duration),
// with how long the export held its programme's advisory lock and its candidates' row locks (from the
// producer's own log).
func BenchmarkExportCommand(b *testing.B) {
	n := benchRecords(b, 1_000_000)
	runs := benchRuns(b)
	bin := proctest.Binary(b, "./producer")
	if _, err := os.Stat(timeCommand); err != nil {
		b.Skipf("%s (GNU time, Debian package \"time\") is needed to measure the peak RSS: %v", timeCommand, err)
	}
	_, natsURL := natstest.Run(b)
	for b.Loop() {
		seeded := newCommandBench(b, bin, natsURL, n)
		seeded.measure(runs, []string{"HPV", "FLU", "MENACWY", "TD_IPV"}, []string{AllProgrammes}).report(b)
	}
}

// BenchmarkNightlyExportCommand is the steady state: DPS_BENCH_RECORDS records (default 10,000,000)
// of which all but 1 % went out in a year of nightly exports, then tonight's `producer export` of
// each programme against the COPY of the rows it sends, DPS_BENCH_RUNS times from the same state (each
// run on a copy of it; the median is reported). Which 1 % is DPS_BENCH_QUEUE (queueShapes): by
// default the newest records, as a night leaves them; "scattered" for every hundredth record of the
// year, the worst case. Seeding takes most of the time (about 6 minutes at 10,000,000).
func BenchmarkNightlyExportCommand(b *testing.B) {
	n := benchRecords(b, 10_000_000)
	shape := benchQueue(b)
	runs := benchRuns(b)
	bin := proctest.Binary(b, "./producer")
	if _, err := os.Stat(timeCommand); err != nil {
		b.Skipf("%s (GNU time) is needed to measure the peak RSS: %v", timeCommand, err)
	}
	_, natsURL := natstest.Run(b)
	for b.Loop() {
		state := newCommandBench(b, bin, natsURL, n)
		start := time.Now()
		if err := buildSteadyState(context.Background(), state.pool, shape); err != nil {
			b.Fatal(err)
		}
		b.Logf("a year of history built in %s; tonight's queue: %s", time.Since(start).Round(time.Second), shape)
		state.measure(runs, []string{"HPV", "FLU", "MENACWY", "TD_IPV"}).report(b)
	}
}

// The shapes of tonight's queue in the steady state: which 1 % of the records a year of nightly
// exports has not carried yet.
const (
	// queueRecent: the newest records, recorded since the last export. Each night carries what was
	// queued the night before, so this is what a queue holds; its links go to the right edge of the
	// history's index by record.
	queueRecent = "recent"
	// queueScattered: every hundredth record of the year, never sent. No run of the pipeline leaves
	// this (each night sends what is queued); it is the worst case for the history's indexes, whose
	// every leaf a night's links then touch.
	queueScattered = "scattered"
)

// benchQueue is DPS_BENCH_QUEUE: queueRecent (the default) or queueScattered.
func benchQueue(b *testing.B) string {
	b.Helper()
	switch v := os.Getenv("DPS_BENCH_QUEUE"); v {
	case "", queueRecent:
		return queueRecent
	case queueScattered:
		return queueScattered
	default:
		b.Fatalf("DPS_BENCH_QUEUE=%q: want %q or %q", v, queueRecent, queueScattered)
		return ""
	}
}

// buildSteadyState turns a fresh seed into a year of nightly exports (a few failed) that carried every
// record but 1 % (which 1 %: shape), some of them again as updates in the latest export; then a few of
// the records sent change (0.1 %), and the tables are left as autovacuum would leave them. The seed
// (demodata.Seed) has analysed its tables: without statistics the planner would take vaccination_records
// for a few rows and join it to the year's exports by a nested loop (over 10^10 comparisons at
// 10,000,000 records). The history's links are loaded with dps_export_records' indexes dropped and then
// built again as the migrations define them (read from the catalogue, so that they cannot drift), which
// is faster than inserting into them one random leaf at a time. It is set-up: the export measured
// afterwards sees the same tables and indexes either way.
func buildSteadyState(ctx context.Context, pool *pgxpool.Pool, shape string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	exec := func(sql string, args ...any) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(sql), err)
		}
		return nil
	}
	if err := exec(`SET maintenance_work_mem = '512MB'`); err != nil {
		return err
	}
	if err := exec(`SET work_mem = '256MB'`); err != nil {
		return err
	}
	// carried says of the record whose id is the column named whether the year's exports carried it:
	// all but the newest 1 % (by id, the order they were recorded in), or all but every hundredth.
	carried := func(id string) string { return id + " % 100 <> 0" }
	if shape == queueRecent {
		var cutoff int64
		if err := conn.QueryRow(ctx, `SELECT min(id) + (max(id) - min(id) + 1) * 99 / 100 FROM vaccination_records`).Scan(&cutoff); err != nil {
			return err
		}
		carried = func(id string) string { return fmt.Sprintf("%s < %d", id, cutoff) }
	}
	// What to build again: the constraints that own an index, then the other indexes.
	var rebuild, drop []string
	rows, err := conn.Query(ctx, `
		SELECT 'ALTER TABLE dps_export_records ADD CONSTRAINT ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid),
		       'ALTER TABLE dps_export_records DROP CONSTRAINT ' || quote_ident(conname)
		FROM pg_constraint WHERE conrelid = 'dps_export_records'::regclass AND contype IN ('p', 'u')
		UNION ALL
		SELECT pg_get_indexdef(i.indexrelid), 'DROP INDEX ' || i.indexrelid::regclass::text
		FROM pg_index i
		WHERE i.indrelid = 'dps_export_records'::regclass
		  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var create, del string
		if err := rows.Scan(&create, &del); err != nil {
			return err
		}
		rebuild, drop = append(rebuild, create), append(drop, del)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	steps := slices.Concat([]string{
		`INSERT INTO dps_exports (id, programme_id, filename, status, row_count, created_at)
		 SELECT gen_random_uuid(), g.id, 'Vaccinations-' || g.code || '-' || d::date || '.csv',
		        CASE WHEN random() < 0.03 THEN 'failed' ELSE 'acknowledged' END, 0, d
		 FROM programmes g, generate_series(now() - interval '365 days', now() - interval '1 day', interval '1 day') d`,
		`ANALYZE dps_exports`,
	}, drop, []string{
		`WITH e AS (SELECT id, programme_id, row_number() OVER (PARTITION BY programme_id ORDER BY created_at) - 1 AS n
		            FROM dps_exports)
		 INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		 SELECT e.id, r.id, r.updated_at, 'new'
		 FROM vaccination_records r JOIN e ON e.programme_id = r.programme_id AND e.n = r.id % 300
		 WHERE ` + carried("r.id") + ` AND NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL`,
		// The latest export (n = 364) carried no record as new, so these updates collide with nothing.
		`WITH e AS (SELECT DISTINCT ON (programme_id) id, programme_id FROM dps_exports ORDER BY programme_id, created_at DESC)
		 INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		 SELECT e.id, r.id, r.updated_at, 'update'
		 FROM vaccination_records r JOIN e ON e.programme_id = r.programme_id
		 WHERE ` + carried("r.id") + ` AND r.id % 10 = 1 AND NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL`,
	}, rebuild, []string{
		`DELETE FROM dps_pending_records WHERE ` + carried("vaccination_record_id"),
		// Tonight's queue is what the last night left plus today's changes, in a table autovacuum keeps
		// small; deleting 99 % of the seed's queue in place would leave its rows spread over every page of
		// a table sized for the whole seed, which a real queue never is.
		`VACUUM FULL dps_pending_records`,
		// Today's changes to records already sent: the queue trigger queues them again.
		`UPDATE vaccination_records SET updated_at = clock_timestamp() WHERE id % 1000 = 7`,
		`VACUUM ANALYZE dps_pending_records, vaccination_records, dps_export_records, dps_exports`,
		// The set-up wrote gigabytes; without this the checkpoint that writes them runs, spread over
		// minutes, under the exports measured next (the first two nightly exports took twice as long).
		`CHECKPOINT`,
	})
	for _, sql := range steps {
		if err := exec(sql); err != nil {
			return err
		}
	}
	return nil
}

// benchRuns is DPS_BENCH_RUNS (default 3): how many times the exports are measured, each time from
// the same state. On a shared machine the ratio of one export to its COPY moved by up to 0.7 between
// two otherwise identical runs; the median of a few paired runs is the figure a user can expect, and
// every run is logged.
func benchRuns(b *testing.B) int {
	b.Helper()
	v := os.Getenv("DPS_BENCH_RUNS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("DPS_BENCH_RUNS=%q: want a positive number", v)
	}
	return n
}

func benchRecords(b *testing.B, def int) int {
	b.Helper()
	v := os.Getenv("DPS_BENCH_RECORDS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("DPS_BENCH_RECORDS=%q: want a positive number", v)
	}
	return n
}

// commandBench is one fresh, seeded database and the producer binary run against it.
type commandBench struct {
	b       *testing.B
	bin     string
	natsURL string
	url     string
	env     []string
	pool    *pgxpool.Pool
	workDir string
	scratch bool // dps_bench_scratch is there for coldBuffers
}

func newCommandBench(b *testing.B, bin, natsURL string, records int) *commandBench {
	b.Helper()
	c := &commandBench{b: b, bin: bin, natsURL: natsURL, workDir: b.TempDir()}
	c.setURL(pgtest.NewDatabase(b))
	c.run("migrate")
	c.run("topology") // export declares nothing: the topology is a deployment step
	start := time.Now()
	c.run("seed", "--records", strconv.Itoa(records), "--seed", "7")
	seed := time.Since(start)
	b.Logf("producer seed --records %d: %.1f s", records, seed.Seconds())
	b.ReportMetric(seed.Seconds(), "seed-s")
	c.connect()
	c.prepareColdBuffers()
	// The seed wrote about a gigabyte per million records; its checkpoint is set-up, not part of the
	// export measured next (spread over minutes, it would slow whichever run it overlaps).
	if _, err := c.pool.Exec(context.Background(), `CHECKPOINT`); err != nil {
		b.Logf("CHECKPOINT after the seed: %v (the runs may overlap the seed's checkpoint)", err)
	}
	return c
}

// setURL points c (its pool, once connected, and the producer's environment) at the database at url.
func (c *commandBench) setURL(url string) {
	c.url = url
	c.env = append(os.Environ(), "DATABASE_URL="+url, "NATS_URL="+c.natsURL, "DPS_SENDER_ODS_CODE=X26SBX", "LOG_FORMAT=json", "LOG_LEVEL=info")
}

func (c *commandBench) connect() {
	pool, err := store.Connect(context.Background(), c.url)
	if err != nil {
		c.b.Fatal(err)
	}
	c.b.Cleanup(pool.Close)
	c.pool = pool
}

// copy is a commandBench on a copy of c's database as it is now, for one run of the exports measured:
// every run starts from the same state. c's pool is closed (nothing may be connected to the database
// copied) and not opened again. The copy is made with its files (pgtest.CopyDatabase), so it leaves no
// WAL or dirty pages behind to slow the run.
func (c *commandBench) copy() *commandBench {
	c.b.Helper()
	if c.pool != nil {
		c.pool.Close()
		c.pool = nil
	}
	cp := &commandBench{b: c.b, bin: c.bin, natsURL: c.natsURL, workDir: c.b.TempDir(), scratch: c.scratch}
	cp.setURL(pgtest.CopyDatabase(c.b, c.url))
	cp.connect()
	return cp
}

// measure runs the exports runs times from c's database as it is now: in each run, each group of
// programmes is exported one after another on a copy of its own.
func (c *commandBench) measure(runs int, groups ...[]string) runResults {
	c.b.Helper()
	var got runResults
	for run := 1; run <= runs; run++ {
		for _, programmes := range groups {
			cp := c.copy()
			for _, programme := range programmes {
				got = append(got, cp.export(programme, run, runs))
			}
			cp.drop()
		}
	}
	return got
}

// drop closes c's pool and drops its database.
func (c *commandBench) drop() {
	c.pool.Close()
	pgtest.DropDatabase(c.b, c.url)
}

// prepareColdBuffers makes the scratch table coldBuffers loads: unlogged, a quarter larger than
// shared_buffers. Without pg_prewarm (PostgreSQL's contrib) the runs are measured as they come.
func (c *commandBench) prepareColdBuffers() {
	ctx := context.Background()
	if _, err := c.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_prewarm`); err != nil {
		c.b.Logf("pg_prewarm is not available (%v): shared buffers are left as each run leaves them, which favours the COPY baseline, run second", err)
		return
	}
	if _, err := c.pool.Exec(ctx, `
		CREATE UNLOGGED TABLE dps_bench_scratch AS
		SELECT g AS id, repeat('x', 480) AS pad
		FROM generate_series(1, (SELECT (setting::bigint * 8192 * 5 / 4) / 512 FROM pg_settings WHERE name = 'shared_buffers')) g`); err != nil {
		c.b.Fatal(err)
	}
	c.scratch = true
}

// coldBuffers fills Postgres' shared buffers with the scratch table, so that the run measured next finds
// none of the rows it reads there (the OS page cache holds the database either way, as on a server
// whose working set fits in memory). The export and its COPY baseline each start so: otherwise the COPY,
// run second over the same rows, would find in them what the export had just read.
func (c *commandBench) coldBuffers() {
	if !c.scratch {
		return
	}
	if _, err := c.pool.Exec(context.Background(), `SELECT pg_prewarm('dps_bench_scratch', 'buffer')`); err != nil {
		c.b.Fatal(err)
	}
}

// run runs the producer to completion and returns its standard output.
func (c *commandBench) run(args ...string) string {
	c.b.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.b.Fatalf("producer %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// exportResult is one export measured against its COPY baseline.
type exportResult struct {
	programme                    string
	rows                         int
	took, copyTook               time.Duration
	rssMiB                       float64
	slowestInsert, slowestUpdate time.Duration
}

func (r exportResult) ratio() float64 { return r.took.Seconds() / r.copyTook.Seconds() }

// export times `producer export --programme programme` as a whole process (under GNU time, for its
// peak RSS) while the writers run, then the COPY baseline of the rows it exported, and logs both.
func (c *commandBench) export(programme string, run, runs int) exportResult {
	c.b.Helper()
	rssFile := filepath.Join(c.workDir, "rss-"+programme)
	cmd := exec.Command(timeCommand, "-f", "%M", "-o", rssFile, c.bin, "export", "--programme", programme)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	w := startWriters(c.b, c.pool, programme)
	c.coldBuffers()
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	writes, werr := w.stop()
	if werr != nil {
		c.b.Fatalf("recording application during the export: %v", werr)
	}
	if err != nil {
		c.b.Fatalf("producer export --programme %s: %v\n%s", programme, err, stderr.String())
	}

	res := exportResult{programme: programme, took: took, slowestInsert: writes.slowestInsert, slowestUpdate: writes.slowestUpdate}
	var exportIDs []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			c.b.Fatalf("summary %q: %v", line, err)
		}
		if r.Status != Created {
			c.b.Fatalf("export of %s: %+v", r.Programme, r)
		}
		res.rows += r.Rows
		exportIDs = append(exportIDs, r.ExportID)
	}
	for _, id := range exportIDs {
		c.coldBuffers()
		d, n := copyRows(c.b, c.pool, id)
		res.copyTook += d
		if n <= 0 {
			c.b.Fatalf("COPY of export %s wrote no rows", id)
		}
	}
	res.rssMiB = readRSS(c.b, rssFile)
	c.b.Logf("run %d/%d: %-7s %8d rows  export %6.2f s  COPY %6.2f s  ratio %.2f  peak RSS %5.1f MiB; "+
		"during the export %d inserts (slowest %s) and %d changes of queued records (slowest %s); %s",
		run, runs, programme, res.rows, took.Seconds(), res.copyTook.Seconds(), res.ratio(), res.rssMiB,
		writes.inserts, writes.slowestInsert.Round(time.Millisecond), writes.updates, writes.slowestUpdate.Round(time.Millisecond),
		committedRuns(stderr.String()))
	return res
}

// runResults are the exports of every run, in the order they ran.
type runResults []exportResult

// report reports, per programme, the median over the runs of the ratio and of the export's seconds,
// and the largest peak RSS, slowest insert and slowest change of a queued record of any run (bounds
// hold in every run, not in the median), and logs them.
func (rs runResults) report(b *testing.B) {
	b.Helper()
	var order []string
	by := map[string][]exportResult{}
	for _, r := range rs {
		if _, ok := by[r.programme]; !ok {
			order = append(order, r.programme)
		}
		by[r.programme] = append(by[r.programme], r)
	}
	for _, programme := range order {
		runs := by[programme]
		ratios, secs := make([]float64, len(runs)), make([]float64, len(runs))
		var rss float64
		var slowestInsert, slowestUpdate time.Duration
		for i, r := range runs {
			ratios[i], secs[i] = r.ratio(), r.took.Seconds()
			rss = max(rss, r.rssMiB)
			slowestInsert, slowestUpdate = max(slowestInsert, r.slowestInsert), max(slowestUpdate, r.slowestUpdate)
		}
		b.Logf("%-7s median of %d runs: ratio %.2f (runs: %s), export %.2f s; largest peak RSS %.1f MiB, slowest insert %s, "+
			"slowest change of a queued record %s", programme, len(runs), median(ratios), formatRatios(ratios), median(secs), rss,
			slowestInsert.Round(time.Millisecond), slowestUpdate.Round(time.Millisecond))
		b.ReportMetric(median(ratios), programme+"-export/copy")
		b.ReportMetric(median(secs), programme+"-export-s")
		b.ReportMetric(rss, programme+"-peak-RSS-MiB")
		b.ReportMetric(slowestInsert.Seconds(), programme+"-slowest-insert-s")
		b.ReportMetric(slowestUpdate.Seconds(), programme+"-slowest-update-s")
	}
}

// median of vs (the mean of the middle two for an even count); vs is sorted in place.
func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func formatRatios(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

// copyRows runs the COPY baseline over an export's links and returns how long it took and the rows.
func copyRows(b *testing.B, pool *pgxpool.Pool, exportID string) (time.Duration, int64) {
	b.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	var size int64
	from := strings.Replace(exportRowsFrom, "$1", "'"+exportID+"'", 1)
	start := time.Now()
	tag, err := conn.Conn().PgConn().CopyTo(ctx, countingDiscard{&size}, fmt.Sprintf(copyBaseline, from))
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start), tag.RowsAffected()
}

func readRSS(b *testing.B, path string) float64 {
	b.Helper()
	out, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		b.Fatalf("%s: empty", path)
	}
	kb, err := strconv.ParseFloat(fields[len(fields)-1], 64)
	if err != nil {
		b.Fatalf("%s: %q", path, out)
	}
	return kb / 1024
}

// committedRuns reads the producer's "export committed" log lines: for each programme, how long it
// held the programme's advisory lock and its candidates' row locks, and how long each step took.
func committedRuns(log string) string {
	var runs []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != "export committed" {
			continue
		}
		run := fmt.Sprintf("%v: advisory lock %s, candidate row locks %s (steps:", line["programme"],
			duration(line["programme_lock_held"]), duration(line["candidate_locks_held"]))
		for _, step := range []string{"decide", "link", "file", "finish", "take", "commit"} {
			if v, ok := line[step+"_took"]; ok {
				run += fmt.Sprintf(" %s %s", step, duration(v))
			}
		}
		runs = append(runs, run+")")
	}
	return strings.Join(runs, "; ")
}

// duration reads a slog duration from JSON: nanoseconds (a number) or text.
func duration(v any) string {
	switch d := v.(type) {
	case float64:
		return time.Duration(d).Round(time.Millisecond).String()
	case string:
		return d
	}
	return "?"
}

// writers plays the recording application during an export: an insert of a new record and a change
// of a queued record of the programme, every 100 ms, each in its own transaction.
type writers struct {
	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	got      writeStats
	err      error
}

type writeStats struct {
	inserts, updates             int
	slowestInsert, slowestUpdate time.Duration
}

func startWriters(b *testing.B, pool *pgxpool.Pool, programme string) *writers {
	b.Helper()
	ctx := context.Background()
	var programmeIDs []int64
	q := `SELECT id FROM programmes WHERE code = $1 OR $1 = 'ALL'`
	rows, err := pool.Query(ctx, q, programme)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		programmeIDs = append(programmeIDs, id)
	}
	if rows.Err() != nil {
		b.Fatal(rows.Err())
	}
	// A sample of the programmes' backlog to change, and one record of each to copy.
	var queued []int64
	rows, err = pool.Query(ctx, `SELECT vaccination_record_id FROM dps_pending_records WHERE programme_id = ANY($1) ORDER BY random() LIMIT 1000`, programmeIDs)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		queued = append(queued, id)
	}
	if rows.Err() != nil || len(queued) == 0 {
		b.Fatalf("no queued records to change (%v)", rows.Err())
	}
	w := &writers{done: make(chan struct{})}
	w.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			template := queued[i%len(queued)]
			t0 := time.Now()
			_, err := pool.Exec(ctx, `
				INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, location_id, vaccine_id, batch_id,
					vaccinator_id, outcome, delivery_site, delivery_method, dose_sequence, dose_volume_ml, performed_at)
				SELECT gen_random_uuid(), programme_id, patient_id, team_id, location_id, vaccine_id, batch_id,
					vaccinator_id, outcome, delivery_site, delivery_method, dose_sequence, dose_volume_ml, performed_at
				FROM vaccination_records WHERE id = $1`, template)
			insert := time.Since(t0)
			t1 := time.Now()
			if err == nil {
				_, err = pool.Exec(ctx, `UPDATE vaccination_records SET updated_at = clock_timestamp() WHERE id = $1`,
					queued[rand.IntN(len(queued))])
			}
			update := time.Since(t1)
			w.mu.Lock()
			if err != nil && w.err == nil {
				w.err = err
			}
			w.got.inserts++
			w.got.updates++
			w.got.slowestInsert = max(w.got.slowestInsert, insert)
			w.got.slowestUpdate = max(w.got.slowestUpdate, update)
			w.mu.Unlock()
		}
	})
	return w
}

func (w *writers) stop() (writeStats, error) {
	w.stopOnce.Do(func() { close(w.done) })
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got, w.err
}

// TestCommandBenchmarksRun runs both command benchmarks once at a tiny size, so that a change to the
// commands they drive (a new required variable, a new deployment step) breaks the suite instead of
// the benchmarks alone, which nothing runs routinely. It measures nothing. A failure hides the
// benchmark's own message: run the benchmark (README, Benchmarks) to see it.
func TestCommandBenchmarksRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the producer a dozen times")
	}
	if _, err := os.Stat(timeCommand); err != nil {
		t.Skipf("%s (GNU time) is needed by the benchmarks: %v", timeCommand, err)
	}
	t.Setenv("DPS_BENCH_RECORDS", "20000") // the steady state then has a few hundred queued records per programme
	t.Setenv("DPS_BENCH_RUNS", "2")        // copies of the state, and a median
	for name, bench := range map[string]func(*testing.B){
		"BenchmarkExportCommand":        BenchmarkExportCommand,
		"BenchmarkNightlyExportCommand": BenchmarkNightlyExportCommand,
	} {
		if r := testing.Benchmark(bench); r.N == 0 {
			t.Errorf("%s failed at 20,000 records", name)
		}
	}
}
