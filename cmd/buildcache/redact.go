package main

import (
	"strings"

	"github.com/buildcache/buildcache/internal/redact"
)

// redactedError is err with a message that repeats no credential; err
// stays in the chain for errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactArgs takes out of err's message the userinfo of any argument that
// has some ("user:pass@host/app:v1"): cobra's "unknown command" and a
// reference parser's error quote the argument whole.
func redactArgs(err error, args []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, a := range args {
		if r := redact.String(a); r != a {
			msg = strings.ReplaceAll(msg, a, r)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
