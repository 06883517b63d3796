// Package notify sends the agent's events — a cluster Failed or
// recovered, drift corrected, a rollout waiting for an approval or halted
// — to webhook receivers (a JSON body, a Slack incoming webhook, or a
// CloudEvent), where people already look. Sending never blocks or fails
// a sync: events queue per receiver (a full queue drops the newest and
// counts it), go out at a bounded rate, and are retried with back-off
// until a deadline. Events carry names, phases, revisions and the
// messages the status files carry — never an object, a Secret value or a
// credential; a receiver's address and token are read from files and
// never logged (a receiver is named by its name).
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

// Type is what happened.
type Type string

// Event types.
const (
	ClusterFailed    Type = "ClusterFailed"    // the cluster's phase became Failed
	ClusterRecovered Type = "ClusterRecovered" // Failed before, Ready now
	DriftCorrected   Type = "DriftCorrected"   // objects changed outside Git were put back
	RolloutApproval  Type = "RolloutApproval"  // the cluster's wave waits for an approval
	RolloutHalted    Type = "RolloutHalted"    // the rollout of the tip halted
)

// Types lists every event type.
var Types = []Type{ClusterFailed, ClusterRecovered, DriftCorrected, RolloutApproval, RolloutHalted}

// Event is one thing that happened to a cluster.
type Event struct {
	Type    Type      `json:"type"`
	Cluster string    `json:"cluster"`
	Region  string    `json:"region,omitempty"`
	Time    time.Time `json:"time"`
	// Revision is the fleet revision the event is about.
	Revision string `json:"revision,omitempty"`
	// Message says it in a sentence; Bundles are the bundles concerned.
	Message string   `json:"message"`
	Bundles []string `json:"bundles,omitempty"`
	// Objects counts the objects concerned (drift corrected).
	Objects int `json:"objects,omitempty"`
}

// Formats of a receiver.
const (
	FormatJSON        = "json"
	FormatSlack       = "slack"
	FormatCloudEvents = "cloudevents"
)

// Receiver is one webhook receiver, as the config file gives it.
type Receiver struct {
	Name string `json:"name"`
	// URL, or URLFile holding it (a Slack webhook's address is a secret).
	URL     string `json:"url,omitempty"`
	URLFile string `json:"urlFile,omitempty"`
	// Format is json (default), slack or cloudevents.
	Format string `json:"format,omitempty"`
	// TokenFile holds a bearer token sent as Authorization.
	TokenFile string `json:"tokenFile,omitempty"`
	// Events are the types sent (default: every type).
	Events []Type `json:"events,omitempty"`
}

// Config is the --notify-config file.
type Config struct {
	Receivers []Receiver `json:"receivers"`
}

// maxConfig bounds the config file.
const maxConfig = 1 << 20

// Load reads and checks a config file; its errors name the file and the
// receiver.
func Load(file string) (*Config, error) {
	data, err := readFile(file, maxConfig)
	if err != nil {
		return nil, fmt.Errorf("--notify-config: %w", err)
	}
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %s", file, errtext.Error(err))
	}
	if len(cfg.Receivers) == 0 {
		return nil, fmt.Errorf("%s: no receivers", file)
	}
	names := map[string]bool{}
	for i, r := range cfg.Receivers {
		where := fmt.Sprintf("%s: receivers[%d]", file, i)
		if r.Name == "" {
			return nil, fmt.Errorf("%s: a receiver needs a name (logs and metrics say it, never its address)", where)
		}
		where += " (" + r.Name + ")"
		if names[r.Name] {
			return nil, fmt.Errorf("%s: the name is taken by another receiver", where)
		}
		names[r.Name] = true
		if (r.URL == "") == (r.URLFile == "") {
			return nil, fmt.Errorf("%s: give url or urlFile (one of them)", where)
		}
		if r.URL != "" {
			if err := checkURL(r.URL); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		}
		switch r.Format {
		case "", FormatJSON, FormatSlack, FormatCloudEvents:
		default:
			return nil, fmt.Errorf("%s: format %q: json, slack or cloudevents", where, errtext.Clean(r.Format))
		}
		for _, t := range r.Events {
			if !slices.Contains(Types, t) {
				return nil, fmt.Errorf("%s: event %q: one of %s", where, errtext.Clean(string(t)), typeList())
			}
		}
	}
	return &cfg, nil
}

func typeList() string {
	var names []string
	for _, t := range Types {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

// checkURL accepts an http or https address, without saying it back (it
// may hold a secret).
func checkURL(raw string) error {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("the address is not an http:// or https:// URL")
	}
	return nil
}

// readFile reads a file of at most limit bytes.
func readFile(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, limit)
	}
	return data, nil
}

// Options tune delivery; zero values take the defaults.
type Options struct {
	// QueueSize is how many events wait per receiver (default 100).
	QueueSize int
	// Rate and Burst bound the events sent per second to one receiver
	// (default 1 a second, bursts of 10).
	Rate  rate.Limit
	Burst int
	// Timeout bounds one request (default 10 s); RetryFor how long an
	// event is retried (default 5 minutes), from a first back-off of
	// Backoff (default 1 s), doubled each time up to a minute.
	Timeout  time.Duration
	RetryFor time.Duration
	Backoff  time.Duration
	// Client sends the requests (default: a client with Timeout).
	Client *http.Client
}

// Notifier sends events to its receivers.
type Notifier struct {
	senders []*sender
	opts    Options
	log     logr.Logger
	// Sent, Dropped and Failed count deliveries, for metrics and tests.
	Sent, Dropped, Failed atomic.Int64
}

// sender is one receiver's queue and limiter.
type sender struct {
	Receiver
	queue   chan Event
	limiter *rate.Limiter
}

// New builds a notifier, its options defaulted; Run sends.
func New(cfg *Config, opts Options, log logr.Logger) *Notifier {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 100
	}
	if opts.Rate <= 0 {
		opts.Rate = 1
	}
	if opts.Burst <= 0 {
		opts.Burst = 10
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 5 * time.Minute
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	n := &Notifier{opts: opts, log: log}
	for _, r := range cfg.Receivers {
		if r.Format == "" {
			r.Format = FormatJSON
		}
		n.senders = append(n.senders, &sender{Receiver: r, queue: make(chan Event, opts.QueueSize), limiter: rate.NewLimiter(opts.Rate, opts.Burst)})
	}
	return n
}

// Send queues an event for each receiver that wants it, without waiting:
// a full queue drops it (and counts it).
func (n *Notifier) Send(e Event) {
	if n == nil {
		return
	}
	e.Message = errtext.Clean(e.Message)
	for _, s := range n.senders {
		if len(s.Events) > 0 && !slices.Contains(s.Events, e.Type) {
			continue
		}
		select {
		case s.queue <- e:
		default:
			n.Dropped.Add(1)
			n.log.Info("a receiver's queue is full: event dropped", "receiver", s.Name, "type", e.Type, "cluster", e.Cluster)
		}
	}
}

// Run delivers queued events, one goroutine per receiver, until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range n.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-s.queue:
					if err := s.limiter.Wait(ctx); err != nil {
						return
					}
					if err := n.deliver(ctx, s, e); err != nil {
						n.Failed.Add(1)
						if ctx.Err() == nil {
							n.log.Error(err, "an event was not delivered", "receiver", s.Name, "type", e.Type, "cluster", e.Cluster)
						}
						continue
					}
					n.Sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
}

// deliver sends one event, retrying with back-off until RetryFor passes;
// a receiver that refuses it (4xx, but 408 and 429) is not asked again.
func (n *Notifier) deliver(ctx context.Context, s *sender, e Event) error {
	deadline := time.Now().Add(n.opts.RetryFor)
	wait := n.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, e, n.opts.Client)
		var refused *refusedError
		if err == nil || errors.As(err, &refused) {
			return err
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%d attempts: %w", attempt, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// refusedError is an answer not worth retrying.
type refusedError struct{ status int }

func (e *refusedError) Error() string {
	return "the receiver refused the event: HTTP " + strconv.Itoa(e.status)
}

// post sends one request. Its errors never hold the address (it may be
// a secret).
func (s *sender) post(ctx context.Context, e Event, client *http.Client) error {
	address := s.URL
	if s.URLFile != "" {
		data, err := readFile(s.URLFile, 8<<10)
		if err != nil {
			return fmt.Errorf("urlFile: %w", err)
		}
		if address = strings.TrimSpace(string(data)); checkURL(address) != nil {
			return errors.New("urlFile: the address is not an http:// or https:// URL")
		}
	}
	body, contentType, err := encode(s.Format, e)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, address, bytes.NewReader(body))
	if err != nil {
		return errors.New("the address is not a valid URL")
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "flotilla-agent")
	if s.TokenFile != "" {
		token, err := readFile(s.TokenFile, 8<<10)
		if err != nil {
			return fmt.Errorf("tokenFile: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("sending: %w", withoutAddress(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("the receiver answered HTTP %d", resp.StatusCode)
	}
	return &refusedError{status: resp.StatusCode}
}

// withoutAddress is a request's error without the receiver's address or
// host name in it.
func withoutAddress(err error) error {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return errors.New("the receiver's host name does not resolve")
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Errorf("%s: %w", op.Op, op.Err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// encode is an event's body in a receiver's format.
func encode(format string, e Event) ([]byte, string, error) {
	switch format {
	case FormatSlack:
		body, err := json.Marshal(map[string]string{"text": e.Text()})
		return body, "application/json", err
	case FormatCloudEvents:
		ce := cloudevents.New()
		ce.SetID(fmt.Sprintf("%s-%s-%d", e.Cluster, e.Type, e.Time.UnixNano()))
		ce.SetSource("flotilla/agent/" + e.Cluster)
		ce.SetType("dev.flotilla." + strings.ToLower(string(e.Type)))
		ce.SetSubject(e.Cluster)
		ce.SetTime(e.Time)
		if err := ce.SetData(cloudevents.ApplicationJSON, e); err != nil {
			return nil, "", err
		}
		if err := ce.Validate(); err != nil {
			return nil, "", err
		}
		body, err := json.Marshal(ce)
		return body, "application/cloudevents+json", err
	}
	body, err := json.Marshal(e)
	return body, "application/json", err
}

// Text is the event as a line for people (Slack).
func (e Event) Text() string {
	where := e.Cluster
	if e.Region != "" {
		where += " (" + e.Region + ")"
	}
	icon := map[Type]string{ClusterFailed: ":red_circle:", ClusterRecovered: ":large_green_circle:", DriftCorrected: ":wrench:",
		RolloutApproval: ":raised_hand:", RolloutHalted: ":octagonal_sign:"}[e.Type]
	text := fmt.Sprintf("%s *%s* %s", icon, where, e.Message)
	if e.Revision != "" {
		text += fmt.Sprintf(" (revision %.7s)", e.Revision)
	}
	return text
}
