package nodeconfig

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	hostsName  = "hosts.toml"
	backupName = "hosts.toml.buildcache-backup"
	tempPrefix = ".hosts.toml.buildcache-"
	tempSuffix = ".tmp"
	// maxHostsFile bounds what is read of a hosts.toml to tell whose it
	// is and whether it changed.
	maxHostsFile = 1 << 20
)

// Action is what Apply or Remove did to one registry's hosts.toml.
type Action string

const (
	Written   Action = "written"        // ours written where there was none
	Replaced  Action = "replaced"       // someone's replaced by ours, theirs kept as the backup
	Updated   Action = "updated"        // ours rewritten with new content
	Unchanged Action = "unchanged"      // ours already, as it would be written
	Restored  Action = "restored"       // ours replaced by the backup of what it had replaced
	Removed   Action = "removed"        // ours removed; there was nothing before it
	Absent    Action = "absent"         // none, and no backup: nothing to do
	NotOurs   Action = "left, not ours" // someone else's, left alone
)

// Result is what was done for one registry.
type Result struct {
	Registry string
	Path     string // its hosts.toml
	Action   Action
}

// ErrNotOurs is the error of a registry whose hosts.toml was replaced by
// someone else after Apply had replaced theirs: two versions of someone
// else's file exist, and which to keep is for a person to say.
var ErrNotOurs = errors.New("nodeconfig: hosts.toml is not ours, and a backup of an earlier one exists")

// ErrLink is the error of a registry directory, hosts.toml or backup
// that is a symbolic link (or not a regular file or directory): nothing
// is written, read or removed through one.
var ErrLink = errors.New("nodeconfig: a link or special file where a directory or regular file belongs")

// Apply writes, for each registry, hostsDir/<name>/hosts.toml sending its
// pulls to mirror first and to its own server when the mirror fails, and
// returns what it did for each in order. Each file is written atomically:
// to a temp file in the same directory, synced, renamed over the old one,
// and the directory synced, so containerd (which reads the file on every
// pull) sees the old file or the new one, never part of one. A hosts.toml
// that is someone else's is kept, hard-linked as hosts.toml.buildcache-backup
// beside it (same bytes, mode and owner), before ours replaces it; Remove
// puts it back. Apply is idempotent: a file of ours is rewritten only if
// it would change, and the backup of the original is kept.
//
// Every registry is checked before any file is written: a bad name or
// URL, a link (ErrLink), or a file of someone else's beside a backup
// (ErrNotOurs) fails the whole call with nothing written. The hosts
// directory is created if missing (0755); it may itself be a link, being
// the operator's choice, but nothing below it is followed.
func Apply(hostsDir, mirror string, registries []Registry) ([]Result, error) {
	if len(registries) == 0 {
		return nil, errors.New("nodeconfig: Apply: no registry")
	}
	seen := map[string]bool{}
	for _, r := range registries {
		if _, err := HostsTOML(mirror, r); err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("nodeconfig: registry %s given twice", r.Name)
		}
		seen[r.Name] = true
	}
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		return nil, fmt.Errorf("nodeconfig: %w", err)
	}
	root, err := openRoot(hostsDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	type plan struct {
		r       Registry
		dir     *regDir
		current []byte // nil: none
		ours    bool
	}
	plans := make([]plan, 0, len(registries))
	defer func() {
		for _, p := range plans {
			p.dir.Close()
		}
	}()
	for _, r := range registries {
		d, err := openRegDir(root, hostsDir, r.Name, false)
		if err != nil {
			return nil, err
		}
		p := plan{r: r, dir: d}
		plans = append(plans, p)
		if d == nil { // no directory yet
			continue
		}
		if p.current, err = d.read(hostsName); err != nil {
			return nil, err
		}
		p.ours = isOurs(p.current)
		backup, err := d.read(backupName)
		if err != nil {
			return nil, err
		}
		if p.current != nil && !p.ours && backup != nil {
			return nil, fmt.Errorf("%w: %s (backup %s)", ErrNotOurs, d.path(hostsName), d.path(backupName))
		}
		plans[len(plans)-1] = p
	}

	results := make([]Result, 0, len(plans))
	for i := range plans {
		p := &plans[i]
		created := false
		if p.dir == nil {
			if p.dir, err = openRegDir(root, hostsDir, p.r.Name, true); err != nil {
				return results, err
			}
			created = true
		} else if p.ours {
			created = bytes.Contains(p.current, []byte("\n"+createdDirMarker+"\n"))
		}
		content, err := hostsTOML(mirror, p.r, created)
		if err != nil {
			return results, err
		}
		res := Result{Registry: p.r.Name, Path: p.dir.path(hostsName)}
		switch {
		case p.ours && bytes.Equal(p.current, content):
			res.Action = Unchanged
		case p.ours:
			res.Action = Updated
		case p.current != nil:
			res.Action = Replaced
		default:
			res.Action = Written
		}
		if res.Action != Unchanged {
			if err := p.dir.install(content, res.Action == Replaced); err != nil {
				return results, err
			}
			if created {
				if err := unix.Fsync(root.fd); err != nil {
					return results, fmt.Errorf("nodeconfig: sync %s: %w", hostsDir, err)
				}
			}
		}
		results = append(results, res)
	}
	return results, nil
}

// Remove undoes Apply for the registries named: a hosts.toml of ours is
// replaced by the backup of what it replaced (renamed back: the very
// bytes, mode and owner), or removed when there was none (and its
// directory with it when Apply created it and nothing else is in it). A
// hosts.toml that is not ours is left alone (NotOurs); if a backup is
// beside it, the call fails with ErrNotOurs for that registry and goes
// on with the others. A registry not named is never touched.
func Remove(hostsDir string, names []string) ([]Result, error) {
	for _, n := range names {
		if err := ValidName(n); err != nil {
			return nil, err
		}
	}
	root, err := openRoot(hostsDir)
	if errors.Is(err, os.ErrNotExist) {
		results := make([]Result, len(names))
		for i, n := range names {
			results[i] = Result{Registry: n, Path: filepath.Join(hostsDir, n, hostsName), Action: Absent}
		}
		return results, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var results []Result
	var errs []error
	for _, n := range names {
		res, err := removeOne(root, hostsDir, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		results = append(results, res)
	}
	return results, errors.Join(errs...)
}

func removeOne(root *rootDir, hostsDir, name string) (Result, error) {
	res := Result{Registry: name, Path: filepath.Join(hostsDir, name, hostsName)}
	d, err := openRegDir(root, hostsDir, name, false)
	if err != nil {
		return res, err
	}
	if d == nil {
		res.Action = Absent
		return res, nil
	}
	defer d.Close()
	current, err := d.read(hostsName)
	if err != nil {
		return res, err
	}
	backup, err := d.read(backupName)
	if err != nil {
		return res, err
	}
	ours := isOurs(current)
	switch {
	case current != nil && !ours && backup != nil:
		return res, fmt.Errorf("%w: %s, left with its backup %s", ErrNotOurs, d.path(hostsName), d.path(backupName))
	case current != nil && !ours:
		res.Action = NotOurs
		return res, nil
	case backup != nil: // ours, or none (someone removed ours)
		if err := unix.Renameat(d.fd(), backupName, d.fd(), hostsName); err != nil {
			return res, fmt.Errorf("nodeconfig: restore %s: %w", d.path(hostsName), err)
		}
		res.Action = Restored
	case current != nil:
		if err := unix.Unlinkat(d.fd(), hostsName, 0); err != nil {
			return res, fmt.Errorf("nodeconfig: remove %s: %w", d.path(hostsName), err)
		}
		res.Action = Removed
	default:
		res.Action = Absent
		return res, nil
	}
	if err := unix.Fsync(d.fd()); err != nil {
		return res, fmt.Errorf("nodeconfig: sync %s: %w", d.dir, err)
	}
	if res.Action == Removed && bytes.Contains(current, []byte("\n"+createdDirMarker+"\n")) {
		d.removeTemps()
		if err := unix.Unlinkat(root.fd, name, unix.AT_REMOVEDIR); err == nil {
			_ = unix.Fsync(root.fd)
		} // else something else is in it: left
	}
	return res, nil
}

// isOurs reports whether b is a hosts.toml this package wrote.
func isOurs(b []byte) bool { return bytes.HasPrefix(b, []byte(ourMarker)) }

// rootDir is the hosts directory, opened (following a link: it is the
// operator's).
type rootDir struct {
	*os.File
	fd int
}

func openRoot(hostsDir string) (*rootDir, error) {
	f, err := os.Open(hostsDir)
	if err != nil {
		return nil, fmt.Errorf("nodeconfig: hosts directory: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("nodeconfig: hosts directory %s is not a directory", hostsDir)
	}
	return &rootDir{File: f, fd: int(f.Fd())}, nil
}

// regDir is one registry's directory, opened without following a link.
type regDir struct {
	f   *os.File
	dir string // its path, for messages
}

// openRegDir opens root/name, refusing a link; missing, it returns nil
// unless create, when it makes it (0755).
func openRegDir(root *rootDir, hostsDir, name string, create bool) (*regDir, error) {
	p := filepath.Join(hostsDir, name)
	if create {
		if err := unix.Mkdirat(root.fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("nodeconfig: mkdir %s: %w", p, err)
		}
	}
	fd, err := unix.Openat(root.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT) && !create:
		return nil, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("%w: %s", ErrLink, p)
	case err != nil:
		return nil, fmt.Errorf("nodeconfig: open %s: %w", p, err)
	}
	d := &regDir{f: os.NewFile(uintptr(fd), p), dir: p}
	d.removeTemps()
	return d, nil
}

func (d *regDir) Close() error {
	if d == nil {
		return nil
	}
	return d.f.Close()
}

func (d *regDir) fd() int                 { return int(d.f.Fd()) }
func (d *regDir) path(name string) string { return filepath.Join(d.dir, name) }

// read returns the regular file name in d, nil if there is none; a link
// or anything but a regular file is ErrLink.
func (d *regDir) read(name string) ([]byte, error) {
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, nil
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: %s", ErrLink, d.path(name))
	case err != nil:
		return nil, fmt.Errorf("nodeconfig: open %s: %w", d.path(name), err)
	}
	f := os.NewFile(uintptr(fd), d.path(name))
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("nodeconfig: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s", ErrLink, d.path(name))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxHostsFile+1))
	if err != nil {
		return nil, fmt.Errorf("nodeconfig: read %s: %w", d.path(name), err)
	}
	if len(b) > maxHostsFile {
		return nil, fmt.Errorf("nodeconfig: %s is larger than %d bytes: not a hosts.toml", d.path(name), maxHostsFile)
	}
	return b, nil
}

// install puts content in place as hosts.toml: written to a temp file,
// synced, then (keep: the current file hard-linked as the backup first)
// renamed over hosts.toml, and the directory synced.
func (d *regDir) install(content []byte, keep bool) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := tempPrefix + hex.EncodeToString(rnd[:]) + tempSuffix
	fd, err := unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("nodeconfig: create a temp file in %s: %w", d.dir, err)
	}
	f := os.NewFile(uintptr(fd), d.path(tmp))
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(0o644) // whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && keep {
		if err = unix.Linkat(d.fd(), hostsName, d.fd(), backupName, 0); err != nil {
			err = fmt.Errorf("keep %s as %s: %w", hostsName, backupName, err)
		}
	}
	if err == nil {
		err = unix.Renameat(d.fd(), tmp, d.fd(), hostsName)
	}
	if err == nil {
		err = unix.Fsync(d.fd())
	}
	if err != nil {
		_ = unix.Unlinkat(d.fd(), tmp, 0)
		return fmt.Errorf("nodeconfig: write %s: %w", d.path(hostsName), err)
	}
	return nil
}

// removeTemps removes the temp files a killed Apply left in d.
func (d *regDir) removeTemps() {
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		return
	}
	_, _ = d.f.Seek(0, io.SeekStart)
	for _, n := range names {
		if strings.HasPrefix(n, tempPrefix) && strings.HasSuffix(n, tempSuffix) {
			_ = unix.Unlinkat(d.fd(), n, 0)
		}
	}
}
