package schemas

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"slices"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestSchemasCompileConcurrently: goroutines that each need every schema, in different orders, get each
// one compiled once and validate with it while others are being compiled (run under -race).
func TestSchemasCompileConcurrently(t *testing.T) {
	set := newSchemaSet()
	names := Names()
	examples := map[string][]json.RawMessage{}
	for _, name := range names {
		b, err := fs.ReadFile(Files(), name+".schema.json")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Examples []json.RawMessage `json:"examples"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		examples[name] = doc.Examples
	}
	const workers = 6
	got := make([]map[string]any, workers) // the schema each worker was given, by name
	var wg sync.WaitGroup
	for w := range workers {
		order := slices.Clone(names)
		if w%2 == 1 {
			slices.Reverse(order)
		}
		got[w] = map[string]any{}
		wg.Go(func() {
			for _, name := range order {
				sch, ok := set.schema(name)
				if !ok {
					t.Errorf("schema %s not found", name)
					return
				}
				got[w][name] = sch
				for i, ex := range examples[name] {
					doc, err := unmarshalExample(ex)
					if err == nil {
						err = validateDoc(name, sch, doc)
					}
					if err != nil {
						t.Errorf("%s example %d: %v", name, i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, name := range names {
		for w := 1; w < workers; w++ {
			if got[w][name] != got[0][name] {
				t.Errorf("schema %s was compiled more than once", name)
			}
		}
	}
	if _, ok := set.schema("no-such-schema"); ok {
		t.Error("a schema no file has was found")
	}
}

func unmarshalExample(b json.RawMessage) (any, error) {
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}
