package companion

import (
	"encoding/json"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Reference is a commit the source commit refers to (for GitOps
// Promoter, the code commit a change of the fleet promotes), as Argo CD's
// source hydrator records it in hydrator.metadata: from the source
// commit's Argocd-reference-commit-{author,date,subject,body,sha,repourl}
// trailers.
type Reference struct {
	Commit *ReferenceCommit `json:"commit,omitempty"`
}

// ReferenceCommit is a referred commit; the field names are Argo CD's
// (CommitMetadata), "repoUrl" included.
type ReferenceCommit struct {
	Author  string `json:"author,omitempty"`
	Date    string `json:"date,omitempty"`
	Subject string `json:"subject,omitempty"`
	Body    string `json:"body,omitempty"`
	SHA     string `json:"sha,omitempty"`
	RepoURL string `json:"repoUrl,omitempty"`
}

const referencePrefix = "Argocd-reference-commit-"

var (
	referenceSHA = regexp.MustCompile(`^[0-9a-f]{5,40}$`)
	trailerLine  = regexp.MustCompile(`^[A-Za-z0-9-]+: `)
)

// setReference sets the field of c a reference trailer line names, as
// Argo CD does: a value that does not validate (an author that is not an
// address, a date that is not RFC 3339, a body that is not a JSON string,
// a SHA that is not 5–40 lowercase hex digits) is not a reference, and
// stays in the body.
func setReference(c *ReferenceCommit, line string) bool {
	key, value, ok := strings.Cut(line, ": ")
	if !ok || !strings.HasPrefix(key, referencePrefix) {
		return false
	}
	switch strings.TrimPrefix(key, referencePrefix) {
	case "repourl":
		if _, err := url.Parse(value); err != nil {
			return false
		}
		c.RepoURL = value
	case "author":
		a, err := mail.ParseAddress(value)
		if err != nil {
			return false
		}
		c.Author = a.String()
	case "date":
		t, err := time.Parse(time.RFC3339, value)
		if err != nil {
			return false
		}
		c.Date = t.Format(time.RFC3339)
	case "subject":
		c.Subject = value
	case "body":
		var body string
		if err := json.Unmarshal([]byte(value), &body); err != nil {
			return false
		}
		c.Body = body
	case "sha":
		if !referenceSHA.MatchString(value) {
			return false
		}
		c.SHA = value
	default:
		return false
	}
	return true
}

// references are the references of a commit message: its trailer block
// (the last paragraph, every line a "Key: value" trailer), one commit at
// most, as Argo CD reads them.
func references(message string) []Reference {
	paragraphs := strings.Split(strings.TrimSpace(message), "\n\n")
	if len(paragraphs) < 2 {
		return nil
	}
	last := paragraphs[len(paragraphs)-1]
	var c ReferenceCommit
	for line := range strings.SplitSeq(last, "\n") {
		if !trailerLine.MatchString(line) {
			return nil
		}
	}
	for line := range strings.SplitSeq(last, "\n") {
		setReference(&c, line)
	}
	if c == (ReferenceCommit{}) {
		return nil
	}
	return []Reference{{Commit: &c}}
}

// withoutReferences is a message body without its valid reference
// trailer lines, each remaining line ending with a newline: the body
// Argo CD writes.
func withoutReferences(body string) string {
	if body == "" {
		return ""
	}
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimSuffix(body, "\n"), "\n") {
		var c ReferenceCommit
		if !setReference(&c, line) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
