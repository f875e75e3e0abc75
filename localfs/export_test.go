package localfs

import "context"

// LockGCShared takes gc.lock as a writer does (a commit, a touch, a
// lease), for tests that count how long a writer waits for collectors.
func (s *Store) LockGCShared(ctx context.Context) (unlock func(), err error) {
	l, err := s.lockGCShared(ctx)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}
