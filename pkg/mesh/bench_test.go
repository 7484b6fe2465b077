package mesh_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// csvStream yields n bytes of DPS-like CSV without holding them: a pipe-like io.Reader, so Send has to
// spool it, as it would a stream from the object store.
type csvStream struct {
	left int64
	row  int
	line []byte
}

func newCSVStream(n int64) *csvStream { return &csvStream{left: n} }

func (s *csvStream) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && s.left > 0 {
		if len(s.line) == 0 {
			s.row++
			s.line = fmt.Appendf(s.line[:0], "9%09d,Jane%d,Doe%d,20%02d%02d%02d,2,SW1A %dAA,%d,20240901T10%04d00,Y,HPV,%d\n",
				s.row*7919%1_000_000_000, s.row%97, s.row%89, 10+s.row%10, 1+s.row%12, 1+s.row%28, s.row%9, s.row, s.row%10000, 1+s.row%3)
		}
		k := copy(p[n:], s.line)
		if int64(k) > s.left {
			k = int(s.left)
		}
		n += k
		s.left -= int64(k)
		s.line = s.line[k:]
	}
	return n, nil
}

// peakSampler records the highest HeapInuse seen while it runs.
type peakSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func startPeakSampler() *peakSampler {
	p := &peakSampler{stop: make(chan struct{})}
	p.wg.Go(func() {
		var ms runtime.MemStats
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > p.peak.Load() {
				p.peak.Store(ms.HeapInuse)
			}
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	})
	return p
}

func (p *peakSampler) finish() uint64 {
	close(p.stop)
	p.wg.Wait()
	return p.peak.Load()
}

// peakRSS is the process's VmHWM (Linux), 0 elsewhere.
func peakRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkSend200MB sends a 200 MB CSV stream through the client with the default 20 MiB chunks.
//
// In-process (default) the sandbox keeps every byte it receives in the same heap, so peak-heap-MiB
// includes the sandbox's copy (sandbox-held-MiB) as well as the client's buffers. To measure the client
// alone, run a sandbox process and point the benchmark at it:
//
//	go run ./pkg/meshsandbox/cmd/mesh-sandbox -tls=false -addr 127.0.0.1:8700 &
//	MESH_BENCH_URL=http://127.0.0.1:8700 go test -run '^$' -bench Send200MB -benchtime 1x ./pkg/mesh
//
// MESH_BENCH_BYTES changes the size.
func BenchmarkSend200MB(b *testing.B) {
	size := int64(200_000_000)
	if v, err := strconv.ParseInt(os.Getenv("MESH_BENCH_BYTES"), 10, 64); err == nil && v > 0 {
		size = v
	}
	external := os.Getenv("MESH_BENCH_URL")
	for _, compress := range []bool{true, false} {
		b.Run(fmt.Sprintf("gzip=%v", compress), func(b *testing.B) {
			var (
				sender *mesh.Client
				held   func() int64
			)
			if external != "" {
				c, err := mesh.New(mesh.Config{BaseURL: external, Mailbox: "X26ABC1", Password: "password", SharedKey: "TestKey"})
				if err != nil {
					b.Fatal(err)
				}
				sender, held = c, func() int64 { return 0 }
			} else {
				e := newEnv(b)
				sender = e.client(b, senderMB, senderPW)
				held = func() int64 {
					var n int64
					for _, m := range e.sb.Messages(senderMB) {
						n += m.Size
					}
					return n
				}
			}
			runtime.GC()
			sampler := startPeakSampler()
			b.SetBytes(size)
			start := time.Now()
			for b.Loop() {
				if _, err := sender.Send(b.Context(), mesh.OutboundMessage{To: "X26ABC2", WorkflowID: workflow,
					FileName: "bench.csv", ContentType: "text/csv", Compress: compress, Body: newCSVStream(size)}); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			peak := sampler.finish()
			b.ReportMetric(float64(size)*float64(b.N)/1e6/elapsed.Seconds(), "MB/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(held())/(1<<20), "sandbox-held-MiB")
			b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
		})
	}
}
