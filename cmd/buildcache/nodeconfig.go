package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/nodeconfig"
)

// nodeConfigFlags are node-config's flags.
type nodeConfigFlags struct {
	mirror      string
	registries  []string
	hostsDir    string
	wait        time.Duration
	remove      bool
	untilSignal bool
}

func (a *app) nodeConfigCommand() *cobra.Command {
	f := &nodeConfigFlags{wait: 2 * time.Minute}
	cmd := &cobra.Command{
		Use:   "node-config --registry NS=URL... [--mirror URL] [--hosts-dir DIR] [--remove]",
		Short: "Point this node's containerd at its local mirror (hosts.toml)",
		Long: `Write containerd's hosts.toml for each --registry, so that containerd (ctr,
the CRI plugin the kubelet pulls through) pulls its images from the mirror
first and from the registry's own server when the mirror fails:

  /etc/containerd/certs.d/docker.io/hosts.toml:
    server = "https://registry-1.docker.io"

    [host."http://127.0.0.1:5000"]
      capabilities = ["pull", "resolve"]

It writes only once the mirror answers /readyz (waiting up to --wait), so
a node never points at a mirror that is not there. Each file is written
atomically (temp file, fsync, rename); a hosts.toml that is not its own is
kept beside it as hosts.toml.buildcache-backup. --remove puts that file
back (or removes ours when there was none); a registry not named is never
touched, and nothing is followed through a symbolic link. With
--until-signal it writes, stays until SIGTERM or SIGINT, then removes:
the shape of a DaemonSet's sidecar next to the node's mirror.

--registry NS=URL names the registry as image references do (docker.io,
ghcr.io, registry.example:5000; the directory under --hosts-dir) and its
own server, the fallback; NS alone means https://NS (docker.io:
https://registry-1.docker.io).

containerd 1.5 or later reads these files (on every pull: no restart) once
its CRI plugin's config_path names the directory, set once, with a
restart:
  containerd 1.x: [plugins."io.containerd.grpc.v1.cri".registry]
  containerd 2.x: [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d"
and without the deprecated registry.mirrors tables, which make the CRI
plugin refuse config_path. The Docker daemon has no hosts.toml: its
equivalent is {"registry-mirrors": ["http://127.0.0.1:5000"]} in
/etc/docker/daemon.json, for Docker Hub images only.

With --json: {"mirror", "hosts_dir", "results": [{"registry", "path",
"action"}]}; action is written, replaced, updated, unchanged, restored,
removed, absent or "left, not ours".

` + seeExitCodes,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.nodeConfig(cmd.Context(), f)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.mirror, "mirror", "http://127.0.0.1:5000", "the node's mirror, `URL` scheme://host:port")
	fl.StringArrayVar(&f.registries, "registry", nil, "point `NS=URL` at the mirror (repeatable): docker.io=https://registry-1.docker.io; NS alone for https://NS")
	fl.StringVar(&f.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd's hosts `DIR` (its CRI registry config_path)")
	fl.Var(durationValue{&f.wait}, "wait", "wait up to `D` for the mirror's /readyz before writing anything (default 2m)")
	fl.BoolVar(&f.remove, "remove", false, "remove the files written for these registries, restoring what they replaced")
	fl.BoolVar(&f.untilSignal, "until-signal", false, "after writing, stay until SIGTERM or SIGINT, then remove them")
	return cmd
}

func (a *app) nodeConfig(ctx context.Context, f *nodeConfigFlags) error {
	if len(f.registries) == 0 {
		return usagef("node-config needs at least one --registry NS=URL (docker.io=https://registry-1.docker.io)")
	}
	if f.remove && f.untilSignal {
		return usagef("--remove and --until-signal do not go together")
	}
	if a.json && f.untilSignal {
		return usagef("--json and --until-signal do not go together: one document is printed, and --until-signal has two moments")
	}
	if f.wait <= 0 {
		return usagef("--wait must be positive: the files are written only once the mirror is ready")
	}
	regs := make([]nodeconfig.Registry, 0, len(f.registries))
	names := make([]string, 0, len(f.registries))
	for _, s := range f.registries {
		u, err := parseUpstream(s)
		if err != nil {
			return usagef("--registry: %v", err)
		}
		scheme := "https"
		if u.insecure {
			scheme = "http"
		}
		regs = append(regs, nodeconfig.Registry{Name: u.ns, Server: scheme + "://" + u.host})
		names = append(names, u.ns)
		// Every name and URL is checked before the mirror is waited for.
		if _, err := nodeconfig.HostsTOML(f.mirror, regs[len(regs)-1]); err != nil {
			return usagef("%v", err)
		}
	}
	if f.remove {
		res, err := nodeconfig.Remove(f.hostsDir, names)
		a.printNodeResults(f, res)
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, f.wait)
	err := nodeconfig.WaitReady(wctx, f.mirror, nil)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: nothing written", err)
	}
	res, err := nodeconfig.Apply(f.hostsDir, f.mirror, regs)
	a.printNodeResults(f, res)
	if err != nil || !f.untilSignal {
		return err
	}
	<-ctx.Done()
	res, err = nodeconfig.Remove(f.hostsDir, names)
	a.printNodeResults(f, res)
	return err
}

// printNodeResults prints what node-config did: a line per registry, or
// the JSON document.
func (a *app) printNodeResults(f *nodeConfigFlags, res []nodeconfig.Result) {
	if a.json {
		type result struct {
			Registry string `json:"registry"`
			Path     string `json:"path"`
			Action   string `json:"action"`
		}
		out := struct {
			Mirror   string   `json:"mirror"`
			HostsDir string   `json:"hosts_dir"`
			Results  []result `json:"results"`
		}{Mirror: f.mirror, HostsDir: f.hostsDir, Results: []result{}}
		for _, r := range res {
			out.Results = append(out.Results, result{r.Registry, r.Path, string(r.Action)})
		}
		_ = a.printJSON(out)
		return
	}
	for _, r := range res {
		fmt.Fprintf(a.stdout, "%s\t%s\t%s\n", r.Registry, r.Action, r.Path)
	}
}
