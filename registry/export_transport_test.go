package registry

import "github.com/google/go-containerregistry/pkg/name"

// URLForTest is the URL a client with opts builds for repo's kind/ref,
// so tests can check the scheme without sending anything.
func URLForTest(repo, kind, ref string, opts ...ClientOption) (string, error) {
	o := defaultClientOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return "", err
		}
	}
	r, err := name.NewRepository(repo)
	if err != nil {
		return "", err
	}
	return newClient(o).url(r, kind, ref), nil
}
