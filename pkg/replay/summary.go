package replay

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Print writes the summary as an aligned table: a header naming the stream and range, the count per
// outcome, then one line per message (sequence, time, subject, outcome, detail).
func (s Summary) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	stream := s.Stream
	if s.Filter != "" {
		stream += " (" + s.Filter + ")"
	}
	noun := "messages"
	if len(s.Entries) == 1 {
		noun = "message"
	}
	fmt.Fprintf(tw, "replay of %s, %s: %d %s\n", stream, s.Range, len(s.Entries), noun)
	for _, o := range Outcomes {
		fmt.Fprintf(tw, "  %s\t%d\n", o, s.Count(o))
	}
	if len(s.Entries) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tOUTCOME\tDETAIL")
		for _, e := range s.Entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Subject, e.Outcome, e.Detail)
		}
	}
	return tw.Flush()
}
