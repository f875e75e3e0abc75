package mirror_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/buildcache/buildcache/mirror"
)

// A client address that fails twice is refused unchecked, good
// credentials included, until an attempt comes back (every 30 s here).
func ExampleNewAuth() {
	token, _ := mirror.NewBearerToken("s3cret")
	auth, _ := mirror.NewAuth(token, mirror.WithFailedLoginLimit(2, time.Minute))
	h := auth.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, tok := range []string{"guess-1", "guess-2", "guess-3", "s3cret"} {
		req := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Printf("%d Retry-After: %q\n", rec.Code, rec.Header().Get("Retry-After"))
	}
	fmt.Printf("%+v\n", auth.Stats())
	// Output:
	// 401 Retry-After: ""
	// 401 Retry-After: ""
	// 429 Retry-After: "30"
	// 429 Retry-After: "30"
	// {Checks:2 FailedLogins:2 Limited:2 Busy:0}
}
