package source

import (
	"net/url"
	"strings"
)

// RedactURL returns a repository URL fit for messages and logs: without
// its user information, since a user name may be a token
// (https://TOKEN@host/…) as much as a password is. SCP-style SSH
// addresses (git@host:path) name a user, not a secret, and are kept.
func RedactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Unparsable: keep the scheme, drop everything up to the last '@'
		// of what would be the authority.
		scheme, rest, _ := strings.Cut(raw, "://")
		authority, path, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			authority = "***" + authority[at:]
		}
		return scheme + "://" + authority + "/" + path
	}
	if u.User == nil {
		return raw
	}
	u.User = nil
	return u.Scheme + "://***@" + strings.TrimPrefix(u.String(), u.Scheme+"://")
}

// RedactError returns err with the user information of the repository URL
// removed from its message, wherever a library put it (an HTTP client's
// error quotes the URL it asked); errors.Is and errors.As still see err.
func RedactError(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	secrets := userInfo(rawURL)
	msg := err.Error()
	clean := msg
	for _, s := range secrets {
		clean = strings.ReplaceAll(clean, s, "***")
	}
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

// userInfo lists the secret parts of a URL's user information, longest
// first (the whole, the password, the user name), raw and escaped.
func userInfo(raw string) []string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return nil
	}
	authority, _, _ := strings.Cut(rest, "/")
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return nil
	}
	info := authority[:at]
	out := []string{info}
	if user, password, ok := strings.Cut(info, ":"); ok {
		out = append(out, password, user)
	} else {
		out = append(out, info)
	}
	for _, s := range out[:] {
		if u, err := url.PathUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
		out = append(out, url.QueryEscape(s))
	}
	return nonEmpty(out)
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if len(s) >= 3 { // never blank out every "a" of a message
			out = append(out, s)
		}
	}
	return out
}

// redactedError is an error whose message had secrets removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
