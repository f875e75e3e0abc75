package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

// trustFlags are --trust-policy (warm, resolve, serve) and
// --with-signatures (warm).
type trustFlags struct {
	policy         string
	withSignatures bool
}

const trustPolicyHelp = "verify images against the trust policy in `FILE` (YAML or JSON: per repository require, warn or skip; cosign keys, keyless identities): a refused image is not recorded, served or pinned (exit 6)"

func (f *trustFlags) add(cmd *cobra.Command, withSignatures bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.policy, "trust-policy", "", trustPolicyHelp)
	if withSignatures {
		fl.BoolVar(&f.withSignatures, "with-signatures", false, "keep each image's signatures, attestations and SBOMs (cosign's .sig/.att/.sbom tags, OCI referrers) in the cache with it, for verifying offline")
	}
}

// resolverOptions are the resolver's options the flags ask for; a
// policy file that does not load is a usage error.
func (f *trustFlags) resolverOptions() ([]registry.Option, error) {
	var opts []registry.Option
	if f.policy != "" {
		p, err := trust.Load(f.policy)
		if err != nil {
			return nil, &usageError{err}
		}
		opts = append(opts, registry.WithVerifier(p))
	}
	if f.withSignatures {
		opts = append(opts, registry.WithReferrers())
	}
	return opts, nil
}

// untrustedWhy is what --explain says of an image the trust policy
// refused, or nil for any other failure.
func untrustedWhy(err error) *explanationJSON {
	var ue *registry.UntrustedError
	if !errors.As(err, &ue) {
		return nil
	}
	return &explanationJSON{Reason: "refused by the trust policy (rule " + ue.Rule + "): " + ue.Digest.String(),
		Trust: ue.Reason + ": " + ue.Detail}
}
