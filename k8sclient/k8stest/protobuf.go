package k8stest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
)

// Protobuf, which kube-apiserver speaks for built-in types and which
// client-go's typed clients ask for first.
const protobufType = "application/vnd.kubernetes.protobuf"

var protoPrefix = []byte{'k', '8', 's', 0}

func wantsProtobuf(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Accept"), protobufType)
}

// isBuiltin reports whether t has a Go type in client-go's scheme, and so
// a protobuf encoding.
func isBuiltin(t *rtype) bool {
	return clientscheme.Scheme.Recognizes(t.GVR.GroupVersion().WithKind(t.Kind))
}

// protoLocked returns st's protobuf message, or nil if t has none.
func (s *Server) protoLocked(t *rtype, st *stored) []byte {
	if st.pb != nil || !isBuiltin(t) {
		return st.pb
	}
	obj, err := clientscheme.Scheme.New(t.GVR.GroupVersion().WithKind(t.Kind))
	if err != nil {
		return nil
	}
	m, ok := obj.(interface{ Marshal() ([]byte, error) })
	if !ok || json.Unmarshal(st.raw, obj) != nil {
		return nil
	}
	st.pb, _ = m.Marshal()
	return st.pb
}

// envelope wraps a protobuf message as kube-apiserver does: the magic
// prefix, then a runtime.Unknown naming its type.
func envelope(apiVersion, kind string, msg []byte) []byte {
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: apiVersion, Kind: kind}, Raw: msg}
	b, _ := u.Marshal()
	return append(slices.Clip(protoPrefix), b...)
}

// jsonBody returns a request's body as JSON, decoding protobuf (which
// typed clients send for built-in types) into it.
func jsonBody(r *http.Request, body []byte) ([]byte, *apiError) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), protobufType) {
		return body, nil
	}
	obj, _, err := protobuf.NewSerializer(clientscheme.Scheme, clientscheme.Scheme).Decode(body, nil, nil)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", "the protobuf body does not decode: "+err.Error())
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", err.Error())
	}
	gvks, _, err := clientscheme.Scheme.ObjectKinds(obj)
	if err == nil && len(gvks) > 0 {
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(gvks[0])
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", err.Error())
	}
	return b, nil
}
