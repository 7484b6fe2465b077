package bus_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
)

// TestPutSurvivesLeaderLoss puts files into the export bucket of a three-node cluster while the
// bucket stream's leader is shut down and restarted again and again, and reads every file a put
// reported stored. jetstream's own Put fails this: it reports success for objects whose every read
// fails its digest (see orderedStore). A put may fail instead; it must then leave no object, or a
// whole one.
func TestPutSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster")
	}
	c := natstest.RunCluster(t, 3)
	// The client stays on n3, which is never shut down: n3 leading is handled by a step-down.
	nc, js := natstest.Connect(t, c.URL(2))
	ctx := t.Context()
	obs, stream := openBucket(t, js, 3)
	const rounds, size = 4, 24 << 20
	data := make([]byte, size)
	rand.Read(data)

	stored := 0
	for round := range rounds {
		name := fmt.Sprintf("export-%d", round)
		stop := make(chan struct{})
		disrupted := make(chan int)
		go func() {
			n := 0
			defer func() { disrupted <- n }()
			for {
				select {
				case <-stop:
					return
				case <-time.After(600 * time.Millisecond):
				}
				si, err := stream.Info(ctx)
				if err != nil || si.Cluster == nil || si.Cluster.Leader == "" {
					continue // no leader at the moment: that is the disruption already
				}
				i := c.Index(si.Cluster.Leader)
				if i == 2 {
					_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+si.Config.Name, nil, time.Second)
				} else {
					c.Stop(i)
					time.Sleep(200 * time.Millisecond)
					c.Start(i)
				}
				n++
			}
		}()
		info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, &paced{r: bytes.NewReader(data)})
		close(stop)
		t.Logf("round %d: %d leader changes during the put; put: %v", round, <-disrupted, err)
		if err != nil {
			// Only a put whose object info was stored with its ack lost leaves an object, and that
			// object is whole.
			if _, gerr := obs.GetInfo(ctx, name); !errors.Is(gerr, jetstream.ErrObjectNotFound) {
				if got, err := readWhenLed(ctx, t, obs, name); err != nil || !bytes.Equal(got, data) {
					t.Errorf("round %d: a failed put left an object that does not read whole (%v)", round, err)
				}
			}
			continue
		}
		stored++
		if info.Size != size {
			t.Errorf("round %d: info says %d bytes", round, info.Size)
		}
		got, err := readWhenLed(ctx, t, obs, name)
		if err != nil {
			t.Errorf("round %d: the put reported success, the read: %v", round, err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("round %d: the read returned other bytes", round)
		}
	}
	if stored == 0 {
		t.Fatal("no put succeeded: nothing was checked")
	}
}

// readWhenLed reads the object, trying again for a while when the read fails. A read needs a stream
// leader, and one made while the cluster settles can also fail the digest once or twice (a reader
// such as the sender reads again for that reason); the object is whole if a read comes out right.
// The objects of jetstream's own Put never do.
func readWhenLed(ctx context.Context, t *testing.T, obs jetstream.ObjectStore, name string) ([]byte, error) {
	var err error
	for range 20 {
		var b []byte
		if b, err = obs.GetBytes(ctx, name); err == nil {
			return b, nil
		}
		t.Logf("read %s: %v", name, err)
		time.Sleep(500 * time.Millisecond)
	}
	return nil, err
}

// paced reads its reader slowly, so that a put spans several leader changes.
type paced struct{ r io.Reader }

func (p *paced) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	time.Sleep(time.Duration(n) * 100 * time.Nanosecond) // 10 MB/s
	return n, err
}

// BenchmarkPutExport compares the export bucket's put, one chunk in flight, with jetstream's own,
// which pipelines its chunks, on one embedded server and on a three-node cluster (R3); the ratio
// of the two in one run is what matters.
func BenchmarkPutExport(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	rand.Read(data)
	for _, nodes := range []int{1, 3} {
		var js jetstream.JetStream
		if nodes == 1 {
			_, url := natstest.Run(b)
			_, js = natstest.Connect(b, url)
		} else {
			c := natstest.RunCluster(b, nodes)
			_, js = natstest.Connect(b, c.URL(0))
		}
		ctx := b.Context()
		ordered, _ := openBucket(b, js, nodes)
		own, err := js.ObjectStore(ctx, bus.BucketExports)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range []struct {
			name string
			obs  jetstream.ObjectStore
		}{{"jetstream", own}, {"ordered", ordered}} {
			b.Run(fmt.Sprintf("nodes=%d/%s", nodes, s.name), func(b *testing.B) {
				b.SetBytes(size)
				for i := 0; b.Loop(); i++ {
					if _, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: fmt.Sprintf("%s-%d", s.name, i)}, bytes.NewReader(data)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestPutEdges covers what a put meets besides a leader change, on one server: sizes at the chunk
// boundaries, a reader that fails (including with its own io.ErrUnexpectedEOF, which is not the end
// of the file), and a name put again.
func TestPutEdges(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx := t.Context()
	obs, stream := openBucket(t, js, 1)
	const chunk = 512 << 10
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for _, c := range []struct {
		name    string
		size    int
		readErr error // returned by the reader after size bytes
		chunks  uint32
	}{
		{"empty", 0, nil, 0},
		{"one byte", 1, nil, 1},
		{"one chunk exactly", chunk, nil, 1},
		{"a chunk and a byte", chunk + 1, nil, 2},
		{"three chunks exactly", 3 * chunk, nil, 3},
		{"reader fails", chunk + 10, errors.New("database went away"), 0},
		{"reader's own unexpected EOF", 2*chunk + 10, io.ErrUnexpectedEOF, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := random(c.size)
			var r io.Reader = bytes.NewReader(data)
			if c.readErr != nil {
				r = io.MultiReader(r, iotest.ErrReader(c.readErr))
			}
			name := "edge-" + c.name
			info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
			if c.readErr != nil {
				if !errors.Is(err, c.readErr) {
					t.Fatalf("put: %v, want %v", err, c.readErr)
				}
				if _, err := obs.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
					t.Errorf("a failed put left info: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != uint64(c.size) || info.Chunks != c.chunks {
				t.Errorf("info: %d bytes in %d chunks, want %d in %d", info.Size, info.Chunks, c.size, c.chunks)
			}
			got, err := obs.GetBytes(ctx, name)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes (%v), want the %d put", len(got), err, c.size)
			}
		})
	}
	held := func() uint64 {
		si, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return si.State.Msgs
	}
	// Failed puts left no chunks: what the stream holds is the stored objects' chunks and infos.
	if got, want := held(), uint64(0+1+1+2+3)+5; got != want {
		t.Errorf("the stream holds %d messages, want %d", got, want)
	}
	// A name put again is replaced, and the old chunks go.
	if _, err := obs.PutBytes(ctx, "edge-three chunks exactly", []byte("replaced")); err != nil {
		t.Fatal(err)
	}
	if got, err := obs.GetString(ctx, "edge-three chunks exactly"); err != nil || got != "replaced" {
		t.Errorf("after the second put: %q, %v", got, err)
	}
	if got, want := held(), uint64(0+1+1+2+1)+5; got != want {
		t.Errorf("after the second put the stream holds %d messages, want %d", got, want)
	}
}

// openBucket declares the topology with replicas and opens the export bucket and its stream.
func openBucket(t testing.TB, js jetstream.JetStream, replicas int) (jetstream.ObjectStore, jetstream.Stream) {
	t.Helper()
	ctx := t.Context()
	if err := bus.EnsureTopology(ctx, js, bus.WithReplicas(replicas)); err != nil {
		t.Fatal(err)
	}
	obs, err := bus.ExportStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bus.BucketExports)
	if err != nil {
		t.Fatal(err)
	}
	return obs, stream
}
