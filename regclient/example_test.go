package regclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/regclient"
)

func Example() {
	// A registry on loopback, which the client speaks plain HTTP to.
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/team/app")
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	// One client, shared by whatever talks to registries
	// (registry.WithClient, ocirepo.WithClient): its logins, rate limits
	// and down registries are learnt once.
	client, err := regclient.New()
	if err != nil {
		panic(err)
	}
	defer client.Close()
	fmt.Println("scheme:", client.Scheme(repo.Registry))

	// The blob calls a repository-backed cache makes...
	blob := []byte("a layer")
	d, size, _ := v1.SHA256(bytes.NewReader(blob))
	if err := client.UploadBlob(ctx, repo, d, size, bytes.NewReader(blob)); err != nil {
		panic(err)
	}
	got, found, err := client.HeadBlob(ctx, repo, d)
	fmt.Printf("HEAD blob: found %v, %d bytes, %v\n", found, got, err)

	// ...and any other call of the distribution API, with Do. A status
	// the caller did not list is a *RemoteError.
	_, err = client.Do(ctx, regclient.Request{
		Method: http.MethodGet, Repo: repo, Kind: "manifests", Ref: "v1", Accept: regclient.ManifestAccept,
	})
	var re *regclient.RemoteError
	if errors.As(err, &re) {
		fmt.Printf("%s: %d, temporary %v\n", re.Op, re.Status, re.Temporary())
	}
	// Output:
	// scheme: http
	// HEAD blob: found true, 7 bytes, <nil>
	// GET manifest: 404, temporary false
}
