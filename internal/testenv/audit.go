package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// auditPolicy logs each request once, when it completes, with its
// metadata only.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
`

// configureAudit gives the API server an audit policy and a JSON log in
// the cluster's folder.
func (c *Cluster) configureAudit(api *envtest.APIServer) error {
	policy := filepath.Join(c.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	c.AuditLog = filepath.Join(c.Dir, "audit.log")
	args := api.Configure()
	args.Set("audit-policy-file", policy)
	args.Set("audit-log-path", c.AuditLog)
	args.Set("audit-log-format", "json")
	// Written as each request completes, never rotated: a reader's offset
	// stays valid.
	args.Set("audit-log-mode", "blocking")
	args.Set("audit-log-maxsize", "0")
	return nil
}

// AuditEvent is what a count of requests reads of one audit event.
type AuditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource string `json:"resource"`
	} `json:"objectRef"`
}

// ReadAudit reads the audit log from byte offset from (0: the start) to
// its end: the requests completed in that time, and the offset to read
// from next. The cluster must have been started with Options.Audit.
func (c *Cluster) ReadAudit(from int64) ([]AuditEvent, int64, error) {
	if c.AuditLog == "" {
		return nil, 0, fmt.Errorf("cluster %s has no audit log: start it with Options.Audit", c.Name)
	}
	f, err := os.Open(c.AuditLog)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, 0, err
	}
	var events []AuditEvent
	r := bufio.NewReaderSize(f, 1<<20)
	at := from
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A line still being written is read next time.
			return events, at, nil
		}
		if err != nil {
			return nil, 0, err
		}
		at += int64(len(line))
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, 0, fmt.Errorf("%s at byte %d: %w", c.AuditLog, at-int64(len(line)), err)
		}
		events = append(events, e)
	}
}

// Client is the program an audit event's user agent names:
// "kustomize-controller" of "kustomize-controller/v0.0.0 (linux/amd64)
// kubernetes/$Format".
func (e AuditEvent) Client() string {
	name, _, _ := strings.Cut(e.UserAgent, "/")
	return name
}
