package localfs

// VerifiedBytes is how many bytes the store hashed to verify sends.
func (s *Store) VerifiedBytes() uint64 { return s.verifiedBytes.Load() }

// VerifiedHits is how many sends the verification record verified alone.
func (s *Store) VerifiedHits() uint64 { return s.verifiedHits.Load() }
