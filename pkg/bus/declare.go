package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Action is what declaring the topology did, or would do, to one stream, consumer or bucket.
type Action string

// Actions.
const (
	ActionCreate    Action = "create"
	ActionUpdate    Action = "update"
	ActionUnchanged Action = "unchanged"
)

// Change is one stream, durable consumer or bucket of the topology and what declaring it did.
type Change struct {
	Kind   string // "stream", "consumer", "object store"
	Name   string // "DPS_BATCHES", "sender on DPS_BATCHES", "dps-exports"
	Action Action
	Fields []FieldChange // for an update, what differs
}

// FieldChange is one setting that differs between the server and the declaration.
type FieldChange struct {
	Field    string // the JetStream JSON name, e.g. num_replicas
	From, To string // JSON values
}

// String is the line `producer topology` prints: "stream DPS_BATCHES: updated num_replicas 1 → 3".
func (c Change) String() string { return c.Line(false) }

// Line is String, or with planned true what a dry run prints: "stream DPS_BATCHES: would update …".
func (c Change) Line(planned bool) string {
	verb := map[Action]string{ActionCreate: "created", ActionUpdate: "updated", ActionUnchanged: "unchanged"}[c.Action]
	if planned && c.Action != ActionUnchanged {
		verb = "would " + string(c.Action)
	}
	s := fmt.Sprintf("%s %s: %s", c.Kind, c.Name, verb)
	for i, f := range c.Fields {
		sep := ", "
		if i == 0 {
			sep = " "
		}
		s += fmt.Sprintf("%s%s %s → %s", sep, f.Field, f.From, f.To)
	}
	return s
}

// ConflictError is a stream or consumer that exists with a setting that cannot be changed in place
// (its storage type, retention, delivery or ack policy): the server would refuse the update, and
// waiting will not mend it. Someone must look, and delete or migrate it.
type ConflictError struct {
	Kind, Name string
	Fields     []FieldChange
}

func (e *ConflictError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = fmt.Sprintf("%s is %s, the pipeline needs %s", f.Field, f.From, f.To)
	}
	return fmt.Sprintf("%s %s exists with an incompatible configuration that cannot be updated in place (%s): "+
		"move its messages elsewhere and delete it, then start again", e.Kind, e.Name, strings.Join(parts, "; "))
}

// ConfigurationProblem marks the conflict as something an operator must fix: a command exits 2 on it.
func (e *ConflictError) ConfigurationProblem() bool { return true }

// Settings the server refuses to change on an existing stream or consumer.
var (
	immutableStreamFields   = []string{"storage", "retention"}
	immutableConsumerFields = []string{"deliver_policy", "ack_policy", "replay_policy", "opt_start_seq", "opt_start_time", "deliver_subject"}
)

// DeclareTopology makes the server hold t: it creates what is missing and updates what differs, one
// stream, consumer or bucket at a time, each through r (so waiting while NATS is unavailable), and
// returns what it did. With dryRun it changes nothing and returns what it would do. It is safe when
// several processes declare at once.
func DeclareTopology(ctx context.Context, js jetstream.JetStream, t Topology, r Retry, dryRun bool) ([]Change, error) {
	var changes []Change
	for _, cfg := range t.Streams() {
		var ch Change
		err := r.Do(ctx, "stream "+cfg.Name, func(ctx context.Context) (err error) {
			ch, err = declareStream(ctx, js, cfg, dryRun)
			return err
		})
		if err != nil {
			return changes, fmt.Errorf("declare stream %s: %w", cfg.Name, err)
		}
		changes = append(changes, ch)
	}
	for _, c := range t.Consumers() {
		var ch Change
		name := c.Config.Durable + " on " + c.Stream
		err := r.Do(ctx, "consumer "+name, func(ctx context.Context) (err error) {
			ch, err = declareConsumer(ctx, js, c, dryRun)
			return err
		})
		if err != nil {
			return changes, fmt.Errorf("declare consumer %s: %w", name, err)
		}
		changes = append(changes, ch)
	}
	obs := t.ObjectStore()
	var ch Change
	err := r.Do(ctx, "object store "+obs.Bucket, func(ctx context.Context) (err error) {
		ch, err = declareObjectStore(ctx, js, obs, dryRun)
		return err
	})
	if err != nil {
		return changes, fmt.Errorf("declare object store %s: %w", obs.Bucket, err)
	}
	return append(changes, ch), nil
}

func declareStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, dryRun bool) (Change, error) {
	ch := Change{Kind: "stream", Name: cfg.Name}
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		ch.Action = ActionCreate
		if dryRun {
			return ch, nil
		}
		_, err := js.CreateStream(ctx, cfg)
		return ch, raced(err)
	case err != nil:
		return ch, err
	}
	fields, err := diffConfig(cfg, s.CachedInfo().Config)
	if err != nil {
		return ch, err
	}
	if conflict := pick(fields, immutableStreamFields); len(conflict) > 0 {
		return ch, &ConflictError{Kind: "stream", Name: cfg.Name, Fields: conflict}
	}
	return update(ch, fields, dryRun, func() error {
		_, err := js.UpdateStream(ctx, cfg)
		return err
	})
}

func declareConsumer(ctx context.Context, js jetstream.JetStream, def ConsumerDef, dryRun bool) (Change, error) {
	ch := Change{Kind: "consumer", Name: def.Config.Durable + " on " + def.Stream}
	c, err := js.Consumer(ctx, def.Stream, def.Config.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound) || (dryRun && errors.Is(err, jetstream.ErrStreamNotFound)):
		ch.Action = ActionCreate
		if dryRun {
			return ch, nil
		}
		_, err := js.CreateOrUpdateConsumer(ctx, def.Stream, def.Config)
		return ch, err
	case err != nil:
		return ch, err
	}
	fields, err := diffConfig(def.Config, c.CachedInfo().Config)
	if err != nil {
		return ch, err
	}
	if conflict := pick(fields, immutableConsumerFields); len(conflict) > 0 {
		return ch, &ConflictError{Kind: "consumer", Name: ch.Name, Fields: conflict}
	}
	return update(ch, fields, dryRun, func() error {
		_, err := js.CreateOrUpdateConsumer(ctx, def.Stream, def.Config)
		return err
	})
}

func declareObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig, dryRun bool) (Change, error) {
	ch := Change{Kind: "object store", Name: cfg.Bucket}
	obs, err := js.ObjectStore(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		ch.Action = ActionCreate
		if dryRun {
			return ch, nil
		}
		_, err := js.CreateOrUpdateObjectStore(ctx, cfg)
		return ch, raced(err)
	case err != nil:
		return ch, err
	}
	st, err := obs.Status(ctx)
	if err != nil {
		return ch, err
	}
	bs, ok := st.(*jetstream.ObjectBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return ch, fmt.Errorf("object store %s: no stream information", cfg.Bucket)
	}
	// The settings of the bucket's stream that the declaration sets, as jetstream derives them.
	// (Discard and the retention policy are not zero values in JSON, so they are set as jetstream sets them.)
	want := jetstream.StreamConfig{Description: cfg.Description, MaxAge: cfg.TTL, Storage: cfg.Storage, Replicas: cfg.Replicas,
		Discard: jetstream.DiscardNew, Retention: jetstream.LimitsPolicy}
	fields, err := diffConfig(want, bs.StreamInfo().Config)
	if err != nil {
		return ch, err
	}
	if conflict := pick(fields, immutableStreamFields); len(conflict) > 0 {
		return ch, &ConflictError{Kind: "object store", Name: cfg.Bucket, Fields: conflict}
	}
	return update(ch, fields, dryRun, func() error {
		_, err := js.CreateOrUpdateObjectStore(ctx, cfg)
		return err
	})
}

// errRaced is a create that lost to another process creating the same thing: not a conflict, and
// the next attempt compares with what that process made.
var errRaced = errors.New("created by another process at the same moment; comparing again")

func raced(err error) error {
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return errRaced
	}
	return err
}

func update(ch Change, fields []FieldChange, dryRun bool, apply func() error) (Change, error) {
	if len(fields) == 0 {
		ch.Action = ActionUnchanged
		return ch, nil
	}
	ch.Action, ch.Fields = ActionUpdate, fields
	if dryRun {
		return ch, nil
	}
	return ch, apply()
}

// diffConfig compares the settings want sets (its JSON fields that are not zero) with have's, and
// returns those that differ, in JSON field order. Settings the declaration leaves to the server's
// defaults are not compared, so what the server fills in is not a difference.
func diffConfig(want, have any) ([]FieldChange, error) {
	w, err := jsonFields(want)
	if err != nil {
		return nil, err
	}
	h, err := jsonFields(have)
	if err != nil {
		return nil, err
	}
	var out []FieldChange
	for _, k := range sortedKeys(w) {
		wv := w[k]
		if isZeroJSON(wv) {
			continue
		}
		hv, ok := h[k]
		if ok && reflect.DeepEqual(wv, hv) {
			continue
		}
		from := "unset"
		if ok {
			from = renderJSON(k, hv)
		}
		out = append(out, FieldChange{Field: k, From: from, To: renderJSON(k, wv)})
	}
	return out, nil
}

func jsonFields(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func isZeroJSON(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case float64:
		return x == 0
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// durationFields are the JetStream settings given in nanoseconds, shown as Go durations.
var durationFields = map[string]bool{"max_age": true, "duplicate_window": true, "ack_wait": true, "backoff": true,
	"inactive_threshold": true, "idle_heartbeat": true}

// renderJSON shows a setting as JSON, durations as "720h0m0s" rather than nanoseconds.
func renderJSON(field string, v any) string {
	if durationFields[field] {
		switch x := v.(type) {
		case float64:
			return time.Duration(x).String()
		case []any:
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = renderJSON(field, e)
			}
			return "[" + strings.Join(parts, " ") + "]"
		}
	}
	return compactJSON(v)
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func pick(fields []FieldChange, names []string) []FieldChange {
	var out []FieldChange
	for _, f := range fields {
		if slices.Contains(names, f.Field) {
			out = append(out, f)
		}
	}
	return out
}
