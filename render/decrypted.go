package render

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

// A value decrypted from a SOPS file is a secret, and a render's message
// can carry it anywhere: a chart's values schema quotes the value that
// failed its pattern, a template's `fail` prints what it was given,
// kustomize quotes what it cannot parse. With the agent, that message is
// logged and written to the cluster's status branch in Git. So every
// render records the scalars it decrypted (ReadSecrets), and every message
// about the render — the renderer's, the engine's checks of its objects,
// the API server's when they are applied — is scrubbed of them
// (errtext.Redact)
// before it leaves the process that rendered: a sandbox worker sends no
// plaintext in an error.

// decrypted records the values one render decrypted.
type decrypted struct {
	mu     sync.Mutex
	values map[string]bool
}

type decryptedKey struct{}

// withDecrypted returns a context whose renders record, in the returned
// decrypted, every value ReadSecrets decrypts.
func withDecrypted(ctx context.Context) (context.Context, *decrypted) {
	d := &decrypted{values: map[string]bool{}}
	return context.WithValue(ctx, decryptedKey{}, d), d
}

// recorded are the values recorded, sorted.
func (d *decrypted) recorded() []string {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.values))
}

func (d *decrypted) add(values []string) {
	if d == nil || len(values) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range values {
		d.values[v] = true
	}
}

// ScrubError returns err, or, when its message shows a value, an error
// with the scrubbed message that is still ErrPathEscapes, ErrTimeout,
// ErrRender or ErrTooLarge when err was (and wraps nothing else: what it
// wrapped may print the value).
func ScrubError(err error, values []string) error {
	if err == nil || len(values) == 0 {
		return err
	}
	msg := err.Error()
	scrubbed := errtext.Redact(msg, values)
	if scrubbed == msg {
		return err
	}
	s := &scrubbedError{msg: scrubbed}
	for _, kind := range []error{ErrPathEscapes, ErrTimeout, ErrRender, ErrTooLarge} {
		if errors.Is(err, kind) {
			s.kinds = append(s.kinds, kind)
		}
	}
	return s
}

type scrubbedError struct {
	msg   string
	kinds []error
}

func (e *scrubbedError) Error() string   { return e.msg }
func (e *scrubbedError) Unwrap() []error { return e.kinds }

// Scrubbing returns r whose renders record what they decrypt and whose
// errors are scrubbed of it; Output.Sensitive lists it, for what checks
// and applies the objects next.
func Scrubbing(r Renderer) Renderer { return scrubbing{r} }

type scrubbing struct{ r Renderer }

func (s scrubbing) Render(ctx context.Context, req *Request) (*Output, error) {
	ctx, d := withDecrypted(ctx)
	out, err := s.r.Render(ctx, req)
	values := d.recorded()
	if err != nil {
		return nil, ScrubError(err, values)
	}
	out.Sensitive = values
	return out, nil
}
