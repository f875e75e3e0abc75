package k8sclient

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// hash returns k's hash under seed, for memory.WithHash: the name hashed
// under the namespace's hash, then a List's generation. It costs about a
// third of hash/maphash.Comparable on a key (BenchmarkKeyHash), which
// makes one call per field through the AES hash: that was more than a
// third of a hit.
func (k key) hash(seed uint64) uint64 {
	h := hashString(k.name, hashString(k.ns, seed))
	if k.list {
		h = mix(h^k.gen, hashM5)
	}
	return h
}

// The multipliers of wyhash (Wang Yi's, public domain), as Go's runtime
// uses it where AES is not available (runtime/hash64.go).
const (
	hashM1 = 0xa0761d6478bd642f
	hashM2 = 0xe7037ed1a0b428db
	hashM5 = 0x1d8e4e27c47d124f
)

// hashString is wyhash of s under seed: the runtime's memhashFallback
// without its 48-byte loop (object names and namespaces are short), with
// seed as its per-process key.
func hashString(s string, seed uint64) uint64 {
	n := len(s)
	b := unsafe.Slice(unsafe.StringData(s), n) // read only
	seed ^= hashM1
	var x, y uint64
	switch {
	case n == 0:
		return seed
	case n < 4:
		x = uint64(b[0]) | uint64(b[n>>1])<<8 | uint64(b[n-1])<<16
	case n <= 8:
		x = uint64(le.Uint32(b))
		y = uint64(le.Uint32(b[n-4:]))
	case n <= 16:
		x = le.Uint64(b)
		y = le.Uint64(b[n-8:])
	default:
		for ; len(b) > 16; b = b[16:] {
			seed = mix(le.Uint64(b)^hashM2, le.Uint64(b[8:])^seed)
		}
		b = unsafe.Slice(unsafe.StringData(s), n)[n-16:]
		x = le.Uint64(b)
		y = le.Uint64(b[8:])
	}
	return mix(hashM5^uint64(n), mix(x^hashM2, y^seed))
}

var le = binary.LittleEndian

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
