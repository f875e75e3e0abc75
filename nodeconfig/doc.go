// Package nodeconfig points a node's container runtime at a local
// registry mirror (buildcache serve on the node's loopback): it writes
// containerd's hosts.toml files, the mirror first and each registry's own
// server as the fallback, only once the mirror answers /readyz
// (WaitReady), and puts back what was there on uninstall (Remove).
// `buildcache node-config` is this with flags; a Kubernetes DaemonSet
// runs it next to the node's mirror.
//
//	if err := nodeconfig.WaitReady(ctx, "http://127.0.0.1:5000", nil); err != nil { … }
//	res, err := nodeconfig.Apply("/etc/containerd/certs.d", "http://127.0.0.1:5000",
//		[]nodeconfig.Registry{{Name: "docker.io", Server: "https://registry-1.docker.io"}})
//	…
//	res, err = nodeconfig.Remove("/etc/containerd/certs.d", []string{"docker.io"})
//
// writes /etc/containerd/certs.d/docker.io/hosts.toml:
//
//	# Written by buildcache node-config. …
//
//	server = "https://registry-1.docker.io"
//
//	[host."http://127.0.0.1:5000"]
//	  capabilities = ["pull", "resolve"]
//
// containerd tries the hosts in order and the server last: a mirror that
// refuses connections (stopped) costs one refused connection per
// request, so pulls go on from the registry at once (milliseconds, in
// cmd/buildcache's node tests). A mirror that accepts connections and
// never answers is waited for without end by containerd 1.6 (ctr and
// crictl still waited after 4 minutes): restart a hung mirror (a liveness
// probe on its /healthz) or Remove its files. The mirror
// resolves tags too ("resolve"), so a tag costs the registry at most one
// HEAD from the mirror, however many nodes pull it.
//
// # What containerd needs
//
// containerd 1.5 or later reads hosts.toml files (ctr images pull
// --hosts-dir DIR; the CRI plugin, which the kubelet pulls through, from
// its registry config_path), and reads them on every pull: no restart
// once config_path is set. config_path itself is set once per node, with
// a restart of containerd:
//
//	# containerd 1.5-1.7, config.toml version = 2
//	[plugins."io.containerd.grpc.v1.cri".registry]
//	  config_path = "/etc/containerd/certs.d"
//
//	# containerd 2.x, config.toml version = 3
//	[plugins."io.containerd.cri.v1.images".registry]
//	  config_path = "/etc/containerd/certs.d"
//
// Remove the older registry.mirrors (and registry.configs) tables of the
// CRI plugin, deprecated since 1.5: with config_path also set, the CRI
// plugin fails to load ("`mirrors` cannot be set when `config_path` is
// provided") and the kubelet cannot pull at all. A directory name is the registry's host as image references
// name it (docker.io, not registry-1.docker.io; host:port with a port).
// containerd's _default directory is not written: its server line would
// send every registry's pulls to one server.
//
// # Docker
//
// The Docker daemon (StreamPark builds through it) has no hosts.toml: its
// equivalent is registry-mirrors in /etc/docker/daemon.json, then a
// restart (or SIGHUP: registry-mirrors is reloadable):
//
//	{"registry-mirrors": ["http://127.0.0.1:5000"]}
//
// It applies to Docker Hub images only (docker.io/…, library/…); other
// registries are pulled directly. This package does not edit
// daemon.json, which holds the daemon's other settings.
//
// # Safety
//
// Apply writes only the registries it is given, each atomically (temp
// file, fsync, rename, directory fsync); a hosts.toml that is not its own
// (it does not start with its marker line) is kept as
// hosts.toml.buildcache-backup, a hard link with the very bytes, mode and
// owner, and Remove renames it back. Nothing below the hosts directory is
// followed through a symbolic link (ErrLink), a hosts.toml replaced by
// someone else after Apply is never overwritten or removed (ErrNotOurs),
// and every registry is checked before any file is written.
package nodeconfig
