package trailer_test

import (
	"slices"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/trailer"
)

func TestValues(t *testing.T) {
	msg := "subject\n\nFlotilla-Override: a\nbody line: not a trailer here\n\nflotilla-override: b\nSigned-off-by: x\nFlotilla-Override:  c \n"
	if got := trailer.Values(msg, "Flotilla-Override"); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("Values = %q: want the last paragraph's, in order", got)
	}
	if got := trailer.Values("no trailers", "Flotilla-Override"); got != nil {
		t.Errorf("no trailer: %q", got)
	}
}
