package s3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// A record is one object per reference, buildcache/records/<reference>
// ("buildcache/records/index.docker.io/library/golang:1.22"), holding
// what a resolver records for it (cache.RootRecorder's descriptor: the
// top digest, its media type and size, the reference and when it was
// last checked against its registry) and any claim on its revalidation
// (claim.go):
//
//	{"root": {"mediaType": ..., "digest": ..., "size": ..., "annotations": {
//	    "org.opencontainers.image.ref.name": ..., "dev.buildcache.resolved-at": ...}},
//	 "claim": {"holder": ..., "until": ...}}
//
// Every write is conditional (If-None-Match: * to create, If-Match: the
// ETag read to update), and a write that finds the object changed reads
// it again and decides again: a record is never replaced by one checked
// earlier, so writers racing on a reference never lose each other's
// work. Looking a reference up is one GET; the ETags of the records this
// process read or wrote are remembered, so an update is one PUT.

// maxRecordAttempts bounds the rounds of a conditional write that keeps
// finding the record changed by others.
const maxRecordAttempts = 8

// maxRememberedETags bounds the ETags kept: beyond it they are dropped
// and an update costs a GET again.
const maxRememberedETags = 10000

type recordDoc struct {
	Root  *v1.Descriptor `json:"root,omitempty"`
	Claim *claimDoc      `json:"claim,omitempty"`
}

type claimDoc struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// recordState is what this process last knew of a record.
type recordState struct {
	etag string
	doc  recordDoc
}

var (
	_ cache.RootIndex    = (*Cache)(nil)
	_ cache.RootLookup   = (*Cache)(nil)
	_ cache.RootRecorder = (*Cache)(nil)
)

// recordKey is the key of name's record, or an error for a name that is
// not a reference a key can hold as it is.
func (c *Cache) recordKey(name string) (string, error) {
	bad := name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") ||
		prefixProblem(name) != "" || strings.IndexFunc(name, unicode.IsSpace) >= 0 || len(name) > 512
	if bad {
		return "", fmt.Errorf("s3: %q is not a reference a record can be kept for", name)
	}
	return c.fleetKey(recordsDir, name), nil
}

// readRecord reads name's record. A missing one is found false.
func (c *Cache) readRecord(ctx context.Context, name string) (recordState, bool, error) {
	key, err := c.recordKey(name)
	if err != nil {
		return recordState{}, false, err
	}
	b, etag, _, err := c.getSmall(ctx, key)
	if err != nil {
		if isNotFound(err) {
			if nerr := c.notFound(ctx, "record", v1.Hash{}, key); !errors.Is(nerr, cache.ErrNotFound) {
				return recordState{}, false, nerr // no bucket
			}
			c.records.Delete(name)
			return recordState{}, false, nil
		}
		return recordState{}, false, c.remoteErr("read record", key, err)
	}
	var doc recordDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return recordState{}, false, fmt.Errorf("s3: record s3://%s/%s is not a record: %w", c.bucket, key, err)
	}
	if doc.Root != nil && doc.Root.Annotations[cache.AnnotationRefName] != name {
		doc.Root = nil // a record copied under another name: not this reference's
	}
	s := recordState{etag: etag, doc: doc}
	c.records.Put(name, s)
	return s, true, nil
}

// writeRecord writes doc as name's record over the record of etag, or
// as a new one when etag is "". It reports false, with no error, when
// the record changed meanwhile.
func (c *Cache) writeRecord(ctx context.Context, name string, doc recordDoc, etag string) (bool, error) {
	key, err := c.recordKey(name)
	if err != nil {
		return false, err
	}
	newTag, err := c.putJSON(ctx, key, doc, etag, etag == "")
	if err != nil {
		c.records.Delete(name)
		if isConflict(err) {
			return false, nil
		}
		return false, c.remoteErr("write record", key, err)
	}
	c.records.Put(name, recordState{etag: newTag, doc: doc})
	return true, nil
}

// state is what this process knows of name's record, read if unknown.
func (c *Cache) state(ctx context.Context, name string) (recordState, bool, error) {
	if s, ok := c.records.Get(name); ok {
		return s, true, nil
	}
	return c.readRecord(ctx, name)
}

// Root implements cache.RootLookup with one GET of the reference's
// record.
func (c *Cache) Root(ctx context.Context, name string) (v1.Descriptor, bool, error) {
	s, found, err := c.readRecord(ctx, name)
	if err != nil || !found || s.doc.Root == nil {
		return v1.Descriptor{}, false, err
	}
	return copyRoot(*s.doc.Root), true, nil
}

// RecordRoot implements cache.RootRecorder: desc becomes the record of
// the reference its cache.AnnotationRefName names, unless the record
// holds a root checked later (cache.AnnotationResolvedAt), which stays:
// a process that learnt less recently what the tag points to does not
// undo what another learnt since.
// A write that ends this process's claim on the reference (claim.go)
// removes the claim; another process's claim stays.
//
// A root whose digest the record does not hold yet is first made safe
// from collectors (protect.go): what it reaches in the bucket is named
// in a lease, any collector deleting is waited out, and the top must be
// in the bucket, else the error wraps cache.ErrNotFound. A record of
// the same digest checked again is one PUT.
func (c *Cache) RecordRoot(ctx context.Context, desc v1.Descriptor) error {
	name := desc.Annotations[cache.AnnotationRefName]
	if _, err := c.recordKey(name); err != nil {
		return err
	}
	desc = copyRoot(desc)
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	for range maxRecordAttempts {
		s, found, err := c.state(ctx, name)
		if err != nil {
			return err
		}
		doc := s.doc
		if r := doc.Root; r != nil && (checkedBefore(desc, *r) || !checkedBefore(*r, desc) && r.Digest == desc.Digest) {
			if doc.Claim == nil || doc.Claim.Holder != c.holder {
				return nil // the record is as new already
			}
			desc = *doc.Root // only our claim to end
		}
		if release == nil && (doc.Root == nil || doc.Root.Digest != desc.Digest) {
			if release, err = c.protect(ctx, desc); err != nil {
				return err
			}
		}
		if doc.Claim != nil && doc.Claim.Holder == c.holder {
			doc.Claim = nil
		}
		doc.Root = &desc
		etag := ""
		if found {
			etag = s.etag
		}
		ok, err := c.writeRecord(ctx, name, doc, etag)
		if err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("s3: record of %s: it kept changing under %d attempts", name, maxRecordAttempts)
}

// checkedBefore reports whether a was checked against its registry
// before b (a root with no time counts as oldest).
func checkedBefore(a, b v1.Descriptor) bool { return resolvedAt(a).Before(resolvedAt(b)) }

func copyRoot(d v1.Descriptor) v1.Descriptor {
	d.Annotations = maps.Clone(d.Annotations)
	d.Platform = nil
	return d
}
