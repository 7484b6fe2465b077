package meshsandbox_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

func TestDiscardBodies(t *testing.T) {
	s := startSandbox(t, func(c *meshsandbox.Config) { c.DiscardBodies = true })
	id := s.sendMessage(t, mb1, mb2, bytes.Repeat([]byte("a"), 1000), map[string]string{"mex-Chunk-Range": "1:2"})
	wantStatus(t, s.do(t, req{method: "POST", path: mb1 + "/outbox/" + id + "/2", header: map[string]string{"mex-Chunk-Range": "2:2"}, body: []byte("bb")}), 202)
	if m, _ := s.Message(id); m.Status != "accepted" || m.Size != 1002 || m.ReceivedChunks != 2 {
		t.Fatalf("message %+v", m)
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb2 + "/inbox/" + id}), http.StatusGone)
	wantStatus(t, s.send0(t, mb1, mb2), http.StatusExpectationFailed) // an empty body is still refused
}

func (s *sandbox) send0(t *testing.T, from, to string) response {
	return s.do(t, req{method: "POST", path: from + "/outbox", body: []byte{}, header: map[string]string{"mex-To": to, "mex-WorkflowID": "DPS"}})
}

// BenchmarkSendChunks pushes 20 MiB chunks through the sandbox over loopback HTTP
// and reports throughput and the heap the sandbox holds per stored MB.
func BenchmarkSendChunks(b *testing.B) {
	for _, discard := range []bool{false, true} {
		b.Run(fmt.Sprintf("discard=%v", discard), func(b *testing.B) {
			srv := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, Mailboxes: defaultMailboxes(), DisableNonceCheck: true, DiscardBodies: discard})
			hs := newBenchServer(b, srv)
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				postChunk(b, hs, chunk)
			}
			b.StopTimer()
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
		})
	}
}

func newBenchServer(b *testing.B, srv *meshsandbox.Server) string {
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	return hs.URL
}

func postChunk(b *testing.B, base string, chunk []byte) {
	hr, _ := http.NewRequest("POST", base+"/messageexchange/"+mb1+"/outbox", bytes.NewReader(chunk))
	hr.Header.Set("Accept", v2)
	hr.Header.Set("mex-To", mb2)
	hr.Header.Set("mex-WorkflowID", "DPS")
	hr.Header.Set("Authorization", meshsandbox.Token(sharedKey, mb1, password, "bench", "0", time.Now()))
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.Fatalf("status %d", resp.StatusCode)
	}
}
