package s3

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// The records as a cache.RootIndex: what `buildcache ls`, a mirror's tag
// list and a resolver's Prune see of a bucket. Index lists the records
// and reads each (a LIST page per 1000 records and a GET each); it is
// for those occasional readers, not for a lookup (Root is one GET).

// records reads every record: name -> state.
func (c *Cache) allRecords(ctx context.Context) (map[string]recordState, error) {
	prefix := c.fleetKey(recordsDir, "")
	var names []string
	if err := c.listKeys(ctx, prefix, func(key string, _ int64, _ time.Time, _ string, _ time.Time) error {
		names = append(names, strings.TrimPrefix(key, prefix))
		return nil
	}); err != nil {
		return nil, err
	}
	out := make(map[string]recordState, len(names))
	for _, name := range names {
		s, found, err := c.readRecord(ctx, name)
		if err != nil {
			return nil, err
		}
		if found {
			out[name] = s
		}
	}
	return out, nil
}

// Index implements cache.RootIndex: the roots of every record.
func (c *Cache) Index(ctx context.Context) (*v1.IndexManifest, error) {
	recs, err := c.allRecords(ctx)
	if err != nil {
		return nil, err
	}
	return indexOf(recs), nil
}

func indexOf(recs map[string]recordState) *v1.IndexManifest {
	im := &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, s := range recs {
		if s.doc.Root != nil {
			im.Manifests = append(im.Manifests, copyRoot(*s.doc.Root))
		}
	}
	return im
}

// UpdateIndex implements cache.RootIndex. fn edits the roots of every
// record; each root it removes, adds or changes is then written as
// RecordRoot writes one, conditionally on the record read. Each record
// changes atomically, the index as a whole does not: a record changed by
// another process meanwhile makes UpdateIndex read everything again and
// call fn again (at most 4 times). Roots without a reference name
// (cache.AnnotationRefName) cannot be kept in records and are an error.
func (c *Cache) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	for range 4 {
		recs, err := c.allRecords(ctx)
		if err != nil {
			return err
		}
		im := indexOf(recs)
		if err := fn(im); err != nil {
			return err
		}
		want := map[string]v1.Descriptor{}
		for _, d := range im.Manifests {
			name := d.Annotations[cache.AnnotationRefName]
			if name == "" {
				return fmt.Errorf("s3: UpdateIndex: root %s has no reference name: a bucket keeps named roots only", d.Digest)
			}
			want[name] = copyRoot(d)
		}
		conflict := false
		for name, s := range recs {
			if _, keep := want[name]; keep || s.doc.Root == nil {
				continue
			}
			key, _ := c.recordKey(name)
			if err := c.deleteKey(ctx, key, s.etag); err != nil {
				return c.remoteErr("delete record", key, err)
			}
			c.records.Delete(name)
		}
		for name, d := range want {
			s, found := recs[name]
			if found && s.doc.Root != nil && reflect.DeepEqual(*s.doc.Root, d) {
				continue
			}
			release := func() {}
			if !found || s.doc.Root == nil || s.doc.Root.Digest != d.Digest {
				if release, err = c.protect(ctx, d); err != nil {
					return err
				}
			}
			doc := s.doc
			doc.Root = &d
			etag := ""
			if found {
				etag = s.etag
			}
			ok, err := c.writeRecord(ctx, name, doc, etag)
			release()
			if err != nil {
				return err
			}
			conflict = conflict || !ok
		}
		if !conflict {
			return nil
		}
	}
	return fmt.Errorf("s3: UpdateIndex: the records kept changing")
}
